"""A realistic escalation history for benches: ``seed_escalations(organization, count)``.

One set-based ``INSERT … SELECT … FROM generate_series`` on PostgreSQL (a million rows in well
under a minute, where the service layer would take hours), deterministic for a given ``seed``.
It bypasses the services on purpose: no audit events, outbox rows, receipts or responses are
written, only the ``escalations_escalation`` rows a read-side bench (history search, insights
charts, the policy-suggestion miner) looks at.

The mix, per row:

- agent: one of ``AGENTS`` (created in the organization if missing), weighted;
- action: ``issue_refund`` (``order``, ``amount``), ``delete_branch`` (``repo``, ``branch``),
  ``send_email`` (``list``, ``subject``), ``deploy_service`` (``service``, ``environment``,
  ``version``), ``grant_access`` (``user``, ``role``); about 14 % are questions with no action;
- status: those created in the last two hours are still pending; of the others about 90 %
  decided (approved / rejected, questions answered), 7 % expired, 3 % cancelled by their agent;
- decided by: a policy for most sends and deploys (auto-approved) and deletes of ``main``
  (auto-rejected), the deadline for 5 % of the rest, a human member (``SEED_MEMBERS``
  operators, created if missing) otherwise, about two thirds of all decisions; every row's
  ``policy_snapshot`` is the snapshot of the ``SEED_POLICIES`` policy that matched it. Humans
  approve most things but reject most refunds over $500 (a pattern for the miner to find);
  human decisions carry a ``decision_channel`` (console, slack, e-mail, sms, telegram,
  whatsapp, push, api) and a wait drawn from an exponential (median ~14 min);
- priority: low 15 %, normal 55 %, high 22 %, urgent 8 %;
- ``created_at`` uniform over the last ``days`` days, rows inserted in that order; ``decided_at``
  is ``created_at`` plus the wait (never in the future); title, ``context.reasoning`` and
  comments drawn from small vocabularies, so full-text search has words to find.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import connection, transaction

from escalations.models import Escalation, Policy
from escalations.policies import policy_snapshot
from tenants.models import Agent, Membership, Organization
from tenants.services import user_get_or_create

AGENTS = ("support-bot", "billing-bot", "devops-bot", "marketing-bot", "it-helpdesk")
SEED_MEMBERS = 6
SEED_POLICIES = (
    # name, outcome, condition
    ("Ask a person", "require_human", ""),
    (
        "Routine sends and deploys go through",
        "auto_approve",
        'action.name in ["send_email", "deploy_service"]',
    ),
    ("Never delete main", "auto_reject", 'action.arguments.branch == "main"'),
)

_INSERT = """
WITH base AS (
    SELECT n,
           random() AS r_agent, random() AS r_action, random() AS r_status,
           random() AS r_who, random() AS r_channel, random() AS r_prio,
           random() AS r_time, random() AS r_wait, random() AS r_text,
           (random() * 99999)::int + 1 AS num
    FROM generate_series(1, %(count)s) AS n
), shaped AS (
    SELECT b.*,
           CASE WHEN r_agent < 0.35 THEN 1 WHEN r_agent < 0.60 THEN 2 WHEN r_agent < 0.78 THEN 3
                WHEN r_agent < 0.90 THEN 4 ELSE 5 END AS agent_index,
           CASE WHEN r_action < 0.34 THEN 'issue_refund' WHEN r_action < 0.50 THEN 'delete_branch'
                WHEN r_action < 0.66 THEN 'send_email' WHEN r_action < 0.78 THEN 'deploy_service'
                WHEN r_action < 0.86 THEN 'grant_access' END AS action_name,
           CASE WHEN r_time * %(days)s * 24 < 2 THEN 'pending'
                WHEN r_status < 0.07 THEN 'expired'
                WHEN r_status < 0.10 THEN 'cancelled' ELSE 'decided' END AS fate,
           now() - r_time * (%(days)s * interval '1 day') AS created,
           CASE WHEN r_prio < 0.15 THEN 'low' WHEN r_prio < 0.70 THEN 'normal'
                WHEN r_prio < 0.92 THEN 'high' ELSE 'urgent' END AS priority,
           (5 + floor(power(r_text, 3) * 2000))::int AS amount,
           (num %% 4) AS variant
    FROM base b
), decided AS (
    SELECT s.*,
           CASE WHEN fate <> 'decided' THEN fate
                WHEN action_name = 'delete_branch' AND num %% 50 = 0 THEN 'policy'
                WHEN action_name IN ('send_email', 'deploy_service') AND r_who < 0.7
                     THEN 'policy'
                WHEN action_name IS NOT NULL AND r_who >= 0.95 THEN 'timeout'
                ELSE 'human' END AS way,
           CASE WHEN action_name = 'delete_branch' AND num %% 50 = 0 THEN false
                WHEN action_name = 'issue_refund' AND amount > 500
                     THEN (n::bigint * 7919) %% 100 < 30
                ELSE (n::bigint * 7919) %% 100 < 82 END AS approve
    FROM shaped s
), final AS (
    SELECT d.*,
           CASE way
             WHEN 'human' THEN CASE WHEN action_name IS NULL THEN 'answered'
                                    WHEN approve THEN 'approved' ELSE 'rejected' END
             WHEN 'policy' THEN CASE WHEN approve THEN 'approved' ELSE 'rejected' END
             WHEN 'timeout' THEN 'rejected'
             ELSE way END AS status,
           CASE way
             WHEN 'human' THEN least(-ln(1 - r_wait * 0.999) * 1200, 80000)
             WHEN 'policy' THEN 0.05 + r_wait * 0.2
             WHEN 'timeout' THEN 86400
             WHEN 'expired' THEN 86400
             WHEN 'cancelled' THEN r_wait * 600
           END AS wait_seconds,
           1 + (num %% %(members)s) AS member_index,
           CASE WHEN approve THEN 2 ELSE 3 END AS policy_index
    FROM decided d
)
INSERT INTO escalations_escalation (
    public_id, organization_id, agent_id, kind, status, title, action, context, response_schema,
    priority, timeout_seconds, on_timeout, callback_url, external_id, metadata, created_at,
    expires_at, required_approvals, policy_snapshot, current_level, current_round,
    deadline_warned, timer_generation, decided_at, decided_by, decision_response,
    decision_comment, edited_arguments, decision_channel, receipt, redaction_reason
)
SELECT
    'esc_' || substr(md5(%(organization)s || ':' || %(seed)s || ':' || n), 1, 24),
    %(organization)s,
    (%(agent_ids)s::bigint[])[agent_index],
    CASE WHEN action_name IS NULL THEN 'question' ELSE 'approval' END,
    status,
    CASE action_name
      WHEN 'issue_refund' THEN 'Refund $' || amount || ' to order #' || num
      WHEN 'delete_branch' THEN 'Delete branch feature/' || num || ' in '
           || (ARRAY['web', 'api', 'infra', 'mobile'])[variant + 1]
      WHEN 'send_email' THEN 'Send the '
           || (ARRAY['spring sale', 'product update', 'renewal reminder', 'welcome'])[variant + 1]
           || ' newsletter to ' || num || ' subscribers'
      WHEN 'deploy_service' THEN 'Deploy '
           || (ARRAY['checkout', 'search', 'billing', 'gateway'])[variant + 1]
           || ' v1.' || (num %% 90) || ' to production'
      WHEN 'grant_access' THEN 'Grant '
           || (ARRAY['admin', 'read-only', 'billing', 'deploy'])[variant + 1]
           || ' access to user ' || num
      ELSE 'Which carrier for the replacement of order #' || num || '?'
    END,
    CASE action_name
      WHEN 'issue_refund' THEN jsonb_build_object('name', action_name, 'arguments',
           jsonb_build_object('order', num, 'amount', amount))
      WHEN 'delete_branch' THEN jsonb_build_object('name', action_name, 'arguments',
           jsonb_build_object('repo', (ARRAY['web', 'api', 'infra', 'mobile'])[variant + 1],
                              'branch', CASE WHEN num %% 50 = 0 THEN 'main'
                                             ELSE 'feature/' || num END))
      WHEN 'send_email' THEN jsonb_build_object('name', action_name, 'arguments',
           jsonb_build_object('list', 'customers-' || (num %% 12), 'subject',
                              'News: ' || (ARRAY['spring sale', 'product update',
                                                   'renewal reminder', 'welcome'])[variant + 1]))
      WHEN 'deploy_service' THEN jsonb_build_object('name', action_name, 'arguments',
           jsonb_build_object('service',
                              (ARRAY['checkout', 'search', 'billing', 'gateway'])[variant + 1],
                              'environment', 'production', 'version', '1.' || (num %% 90)))
      WHEN 'grant_access' THEN jsonb_build_object('name', action_name, 'arguments',
           jsonb_build_object('user', 'usr_' || num,
                              'role',
                              (ARRAY['admin', 'read-only', 'billing', 'deploy'])[variant + 1]))
    END,
    jsonb_build_object('reasoning', CASE action_name
      WHEN 'issue_refund' THEN (ARRAY[
        'The customer was charged twice for the same order.',
        'The parcel arrived damaged; the customer sent photos.',
        'The subscription renewed after the customer cancelled it.',
        'The delivery was nine days late and the customer asks for compensation.'])[variant + 1]
      WHEN 'delete_branch' THEN (ARRAY[
        'The branch was merged three months ago and is stale.',
        'An abandoned experiment with no commits for 120 days.',
        'The branch duplicates work already on main.',
        'Cleanup before the repository migration.'])[variant + 1]
      WHEN 'send_email' THEN (ARRAY[
        'The campaign was approved by marketing last week.',
        'Customers asked to hear about the new pricing.',
        'Renewals are due at the end of the month.',
        'New sign-ups have not received the onboarding guide.'])[variant + 1]
      WHEN 'deploy_service' THEN (ARRAY[
        'All checks passed on staging; the fix closes a checkout outage.',
        'A security patch for a vulnerable dependency.',
        'Performance improvement measured on staging.',
        'Rollback of yesterday''s faulty release.'])[variant + 1]
      WHEN 'grant_access' THEN (ARRAY[
        'The user joined the on-call rotation.',
        'Temporary access for an audit.',
        'The manager approved the request in the ticket.',
        'Access needed to debug a customer incident.'])[variant + 1]
      ELSE 'The customer needs the replacement laptop by Friday; ground may be too slow.'
    END),
    CASE WHEN action_name IS NULL
         THEN '{"type": "object", "properties": {"carrier": {"enum": ["ground", "express"]}}}'
         ELSE '{"type": "boolean"}' END::jsonb,
    priority,
    86400,
    CASE WHEN fate = 'expired' THEN 'expire' ELSE 'reject' END,
    '',
    CASE WHEN num %% 3 = 0 THEN 'ticket-' || num ELSE '' END,
    '{}'::jsonb,
    created,
    created + interval '1 day',
    1,
    CASE way WHEN 'policy' THEN (%(policies)s::jsonb[])[policy_index]
             ELSE (%(policies)s::jsonb[])[1] END,
    1, 0, false, 0,
    CASE WHEN status = 'pending' THEN NULL
         ELSE least(created + wait_seconds * interval '1 second', now()) END,
    CASE way
      WHEN 'human' THEN jsonb_build_object('type', 'user',
           'id', (%(member_ids)s::text[])[member_index],
           'email', (%(member_emails)s::text[])[member_index])
      WHEN 'policy' THEN jsonb_build_object('type', 'policy',
           'id', (%(policies)s::jsonb[])[policy_index] ->> 'id',
           'name', (%(policies)s::jsonb[])[policy_index] ->> 'name')
      WHEN 'timeout' THEN '{"type": "timeout", "on_timeout": "reject"}'::jsonb
      WHEN 'expired' THEN '{"type": "timeout", "on_timeout": "expire"}'::jsonb
      WHEN 'cancelled' THEN jsonb_build_object('type', 'agent',
           'id', (%(agent_public_ids)s::text[])[agent_index],
           'name', (%(agent_names)s::text[])[agent_index])
    END,
    CASE WHEN status = 'answered' THEN '{"carrier": "express"}'::jsonb
         WHEN status IN ('approved', 'rejected') THEN '{}'::jsonb END,
    CASE
      WHEN way = 'policy' THEN 'Decided by policy “'
           || ((%(policies)s::jsonb[])[policy_index] ->> 'name') || '”.'
      WHEN way = 'human' AND status = 'rejected' AND action_name = 'issue_refund'
           AND amount > 500 THEN 'Refunds over $500 need a manager.'
      WHEN way = 'human' AND status = 'rejected' THEN (ARRAY[
           'Not without a ticket.', 'Wrong customer; check again.',
           'Too risky this week.', ''])[variant + 1]
      WHEN way = 'human' AND status = 'approved' THEN (ARRAY[
           '', 'Looks right.', 'Checked, fine.', ''])[variant + 1]
      ELSE ''
    END,
    NULL,
    CASE WHEN way = 'human' THEN CASE
           WHEN r_channel < 0.45 THEN 'console' WHEN r_channel < 0.65 THEN 'slack'
           WHEN r_channel < 0.77 THEN 'email' WHEN r_channel < 0.85 THEN 'sms'
           WHEN r_channel < 0.90 THEN 'telegram' WHEN r_channel < 0.93 THEN 'whatsapp'
           WHEN r_channel < 0.97 THEN 'push' ELSE 'api' END
         WHEN way = 'cancelled' THEN 'api'
         ELSE '' END,
    '',
    ''
FROM final
-- In creation order, as a live organization's rows arrive: the table's physical order then
-- follows created_at, as it would (newest-first scans read neighbouring pages).
ORDER BY created
"""


def _agents(organization: Organization) -> list[Agent]:
    return [Agent.objects.get_or_create(organization=organization, name=name)[0] for name in AGENTS]


def _members(organization: Organization) -> list[Membership]:
    members = []
    for number in range(1, SEED_MEMBERS + 1):
        user = user_get_or_create(email=f"operator{number}@{organization.slug}.seed")
        members.append(
            Membership.objects.get_or_create(
                organization=organization, user=user, defaults={"role": "operator"}
            )[0]
        )
    return members


def _policies(organization: Organization) -> list[dict[str, Any]]:
    snapshots = []
    for position, (name, outcome, condition) in enumerate(SEED_POLICIES, start=1):
        policy = Policy.objects.get_or_create(
            organization=organization,
            name=name,
            defaults={"outcome": outcome, "condition": condition, "priority": position * 10},
        )[0]
        snapshots.append(policy_snapshot(policy))
    return snapshots


def seed_escalations(
    organization: Organization, count: int, *, days: int = 90, seed: int = 0
) -> int:
    """Insert ``count`` escalations into ``organization`` (PostgreSQL only) and return how many
    rows the organization has now. The same ``seed`` gives the same rows (ids included), so two
    runs (or two benches) see the same history; seed a second batch with another ``seed``."""
    if connection.vendor != "postgresql":
        raise RuntimeError("seed_escalations needs PostgreSQL (it uses generate_series).")
    agents = _agents(organization)
    members = _members(organization)
    policies = _policies(organization)
    params = {
        "count": count,
        "days": days,
        "seed": str(seed),
        "organization": organization.pk,
        "agent_ids": [agent.pk for agent in agents],
        "agent_public_ids": [agent.public_id for agent in agents],
        "agent_names": [agent.name for agent in agents],
        "member_ids": [member.public_id for member in members],
        "member_emails": [member.user.email for member in members],
        "members": len(members),
        "policies": [json.dumps(snapshot) for snapshot in policies],
    }
    with transaction.atomic(), connection.cursor() as cursor:
        # random() after setseed() is deterministic: an INSERT never runs a parallel plan.
        cursor.execute("SELECT setseed(%s)", [(seed % 1000) / 1000])
        cursor.execute(_INSERT, params)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE escalations_escalation")
    return Escalation.objects.filter(organization=organization).count()
