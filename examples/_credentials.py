"""Where the examples find their API key: the environment, else what ``make run`` saved."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DEMO_CREDENTIALS = Path(__file__).resolve().parent.parent / ".demo-credentials.json"


def agent_credentials() -> tuple[str, str]:
    """(api_key, base_url) from AWAITHUMAN_API_KEY / AWAITHUMAN_BASE_URL, else from the demo
    file that ``make run`` wrote (which names the server it started, on whatever port)."""
    demo = json.loads(DEMO_CREDENTIALS.read_text()) if DEMO_CREDENTIALS.exists() else {}
    api_key = os.environ.get("AWAITHUMAN_API_KEY") or demo.get("agent_key")
    base_url = (
        os.environ.get("AWAITHUMAN_BASE_URL") or demo.get("base_url") or "http://127.0.0.1:8000"
    )
    if not api_key:
        sys.exit("No API key: run `make run` first (it saves one), or set AWAITHUMAN_API_KEY.")
    return api_key, base_url
