"""The embedded default's e-mail backend: one line per e-mail on the console, with its links.

Django's console backend prints whole MIME messages (headers, both alternatives, base64 parts):
dozens of lines for each notification, which buried the server's own output and made a burst of
creates slow to print. A person trying ``make run`` needs who it went to, what it says and the
links to click (the approve and reject links of a notification, a sign-in or invitation link).
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

_URL = re.compile(r"https?://\S+")


def summary(message: EmailMessage) -> str:
    """``[e-mail] to … · subject · Label: link · …`` for one message."""
    links = []
    for line in str(message.body).splitlines():
        line = line.strip()
        if _URL.search(line):
            links.append(" ".join(line.split()))
    parts = [f"[e-mail] to {', '.join(message.recipients())}", repr(str(message.subject))]
    return " · ".join(parts + links)


class ConsoleSummaryBackend(BaseEmailBackend):
    def __init__(self, *args: Any, stream: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        with self._lock:
            for message in email_messages:
                self.stream.write(summary(message) + "\n")
            self.stream.flush()
        return len(email_messages)
