"""Sign-in limits on real processes: every web process counts failures in the same place."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.live import production_stack

pytestmark = pytest.mark.services

PASSWORD = "correct-horse-42"


def _sign_in(base: str, client: httpx.Client, password: str) -> httpx.Response:
    page = client.get(f"{base}/account/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return client.post(
        f"{base}/account/login/",
        data={"login": "owner@live.test", "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/account/login/"},
    )


def test_failures_counted_on_one_process_lock_the_account_on_the_other(tmp_path):
    with production_stack(tmp_path) as stack:
        stack.manage("createorg", "Live Test", "--owner", "owner@live.test", "--password", PASSWORD)
        first, second = stack.daphne(), stack.daphne()
        with httpx.Client(timeout=10) as attacker:
            for _ in range(5):
                refused = _sign_in(first, attacker, "wrong-guess")
                assert refused.status_code == 200
        with httpx.Client(timeout=10) as client:
            locked = _sign_in(second, client, PASSWORD)
            assert locked.status_code == 200, "the right password got in on the other process"
            assert "Too many failed login attempts" in locked.text
