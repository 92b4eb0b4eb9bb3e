"""``examples/refund_agent.py`` end to end, as a user runs it, against the live server."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.live import ROOT
from tests.sdk.conftest import Background

EXAMPLES = ROOT / "examples"


def run_example(live, *args: str, extra_env: dict[str, str] | None = None):
    env = live.env(**(extra_env or {}))
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / args[0]), *args[1:]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_refund_agent_waits_for_approval_verifies_the_receipt_and_refunds(
    live, operator, run_id
):
    agent = run_example(live, "refund_agent.py", "--order", "1042", "--run-id", run_id)

    def human() -> float:
        escalation = operator.pending(external_id=run_id)
        assert escalation["title"] == "Refund $750 to order #1042"
        assert "twice" in escalation["context"]["reasoning"]
        time.sleep(1)
        operator.approve(escalation["id"], comment="Duplicate confirmed.")
        return time.monotonic()

    approved_at = Background(human).result()
    output, _ = agent.communicate(timeout=30)
    finished = time.monotonic()

    assert agent.returncode == 0, output
    assert "receipt verified" in output
    assert "Refunded $750 on order #1042" in output
    assert finished - approved_at < 5  # resumes within a second, plus interpreter shutdown


def test_the_refund_agent_reports_a_rejection(live, operator, run_id):
    agent = run_example(live, "refund_agent.py", "--order", "77", "--run-id", run_id)
    Background(
        lambda: operator.answer(
            operator.pending(external_id=run_id)["id"],
            outcome="reject",
            comment="Customer already got store credit.",
        )
    )
    output, _ = agent.communicate(timeout=30)
    assert agent.returncode == 1, output
    assert "Customer already got store credit." in output
    assert "Refunded" not in output


def test_the_llm_variant_explains_itself_without_keys(live):
    agent = run_example(
        live, "refund_agent_llm.py", extra_env={"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}
    )
    output, _ = agent.communicate(timeout=30)
    assert agent.returncode == 2
    assert "OPENAI_API_KEY" in output


def _credentials_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_credentials", EXAMPLES / "_credentials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_examples_follow_make_run_to_another_port(tmp_path, monkeypatch):
    credentials = _credentials_module()
    demo = tmp_path / ".demo-credentials.json"
    demo.write_text('{"agent_key": "ahk_test_x", "base_url": "http://127.0.0.1:8123"}')
    monkeypatch.setattr(credentials, "DEMO_CREDENTIALS", demo)
    monkeypatch.delenv("AWAITHUMAN_API_KEY", raising=False)
    monkeypatch.delenv("AWAITHUMAN_BASE_URL", raising=False)
    assert credentials.agent_credentials() == ("ahk_test_x", "http://127.0.0.1:8123")
    monkeypatch.setenv("AWAITHUMAN_BASE_URL", "https://approvals.example.com")
    assert credentials.agent_credentials()[1] == "https://approvals.example.com"
