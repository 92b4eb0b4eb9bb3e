"""API keys are cached per process, and a revocation still reaches every process at once: the
next request a second process serves half a second after the revocation is refused."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tenants.keycache import CHECK_SECONDS
from tests.live import production_stack

pytestmark = pytest.mark.services


def test_a_key_revoked_through_one_process_is_refused_by_another_within_a_second(
    tmp_path: Path,
) -> None:
    with production_stack(tmp_path) as stack:
        org = stack.organization()
        first, second = stack.daphne(), stack.daphne()
        headers = {"Authorization": f"Bearer {org['agent_key']}"}
        for base in (first, second):  # both processes now hold the key in their cache
            for _ in range(3):
                assert httpx.get(f"{base}/api/v1/escalations", headers=headers).status_code == 200

        key_id = org["agent_key"].split("_")[2]
        stack.manage(
            "shell",
            "-c",
            "from audit.services import SYSTEM_ACTOR; from tenants.models import ApiKey;"
            " from tenants.services import api_key_revoke;"
            f" api_key_revoke(api_key=ApiKey.objects.get(key_id='{key_id}'),"
            " actor=SYSTEM_ACTOR)",
        )
        time.sleep(CHECK_SECONDS + 0.1)

        for base in (second, first):
            response = httpx.get(f"{base}/api/v1/escalations", headers=headers)
            assert response.status_code == 401, response.text
            assert "revoked" in response.json()["detail"]
