"""Celery entry points of the audit trail (beat runs them; so does the embedded scheduler)."""

from __future__ import annotations

from celery import shared_task

from .checkpoints import checkpoints_issue_due


@shared_task(ignore_result=True)
def checkpoints_sign() -> int:
    """Sign a checkpoint of every chain that grew since its last one."""
    return checkpoints_issue_due()
