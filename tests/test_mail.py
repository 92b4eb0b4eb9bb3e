"""The embedded default prints one line per e-mail, with the links a person needs."""

from __future__ import annotations

import io

from django.core.mail import EmailMultiAlternatives

from awaithuman.mail import ConsoleSummaryBackend


def test_an_e_mail_is_one_line_with_its_recipient_subject_and_links() -> None:
    stream = io.StringIO()
    message = EmailMultiAlternatives(
        subject="Approval needed: Refund $750",
        body=(
            "The agent support-bot asks:\n\n  Refund $750 to order #1042\n\n"
            "Approve: http://127.0.0.1:8123/n/a/abc\nReject:  http://127.0.0.1:8123/n/r/def\n"
            "Open in the console: http://127.0.0.1:8123/escalations/esc_1/\n"
        ),
        to=["alice@acme.test"],
    )
    message.attach_alternative("<p>html</p>", "text/html")

    assert ConsoleSummaryBackend(stream=stream).send_messages([message]) == 1

    printed = stream.getvalue()
    assert printed.count("\n") == 1
    assert printed.startswith("[e-mail] to alice@acme.test · 'Approval needed: Refund $750'")
    assert "Approve: http://127.0.0.1:8123/n/a/abc" in printed
    assert "Reject: http://127.0.0.1:8123/n/r/def" in printed
    assert "Open in the console: http://127.0.0.1:8123/escalations/esc_1/" in printed
    assert "<p>" not in printed and "Content-Type" not in printed
