"""The notification fan-out bench's report: ``RESULTS-notifications.md`` from the run's figures,
with the analysis of what limits them."""

from __future__ import annotations

import subprocess
from typing import Any

from .notification_providers import CHANNELS
from .queue_fanout import ROOT

TARGET_P99_S = 2.0


def code_version() -> str:
    """The commit measured, and the files that differ from it: work in progress in the tree is
    measured too."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        ).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    if not changed:
        return f"commit {commit}"
    more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
    return f"commit {commit} with local changes to {', '.join(changed[:8])}{more}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "–"
    return f"{a / b:,.0f}×" if a / b >= 100 else f"{a / b:.1f}×"


def verdict(product: dict[str, Any]) -> str:
    met = (
        product["p99_ms"] is not None
        and product["p99_ms"] <= TARGET_P99_S * 1000
        and product["duplicates"] == 0
        and product["losses"] == 0
    )
    return (
        f"**Target p99 ≤ {TARGET_P99_S:g} s, zero duplicates, zero losses: "
        f"{'met' if met else 'missed'}** — p99 {(product['p99_ms'] or 0) / 1000:.2f} s, "
        f"{product['duplicates']} duplicates, {product['losses']} losses (delivery rows: "
        f"{product['deliveries']['status']}, {product['deliveries']['retried']} retried)."
    )


def load_section(load: dict[str, Any]) -> list[str]:
    product, celery = load["product"], load["celery_baseline"]
    wt, bt = product["worker_tasks"], celery["worker_tasks"]

    def row(label: str, key: str, unit: str = " ms") -> str:
        a, b = product[key], celery[key]
        return f"| {label} | {a:,}{unit} | {b:,}{unit} | {ratio(a, b)} |"

    return [
        "| figure | AwaitHuman | Celery baseline | ratio |",
        "|---|---|---|---|",
        row("level entered → provider receipt p50", "p50_ms"),
        row("p95", "p95_ms"),
        row("p99", "p99_ms"),
        row("max", "max_ms"),
        row("deliveries/s (first level entered → last receipt)", "deliveries_per_s", ""),
        f"| worker time per delivery p50 / p99 | {wt['p50_ms']} / {wt['p99_ms']} ms | "
        f"{bt['p50_ms']} / {bt['p99_ms']} ms | {ratio(wt['p50_ms'], bt['p50_ms'])} / "
        f"{ratio(wt['p99_ms'], bt['p99_ms'])} |",
        f"| broker queue depth max / mean | {product['queue_depth']['max']} / "
        f"{product['queue_depth']['mean']} | {celery['queue_depth']['max']} / "
        f"{celery['queue_depth']['mean']} | |",
        f"| duplicates / losses (counted at the fakes) | {product['duplicates']} / "
        f"{product['losses']} | {celery['duplicates']} / {celery['losses']} | |",
        f"| escalation timers: longest time without a tick / beat tasks expired in the queue | "
        f"{product['periodic']['longest_without_timers_s']} s / "
        f"{sum(product['periodic']['expired'].values())} | "
        f"{celery['periodic']['longest_without_timers_s']} s / "
        f"{sum(celery['periodic']['expired'].values())} | |",
        f"| other work on the machine meanwhile | "
        f"{product['machine']['other_cpu_cores']:.2f} cores | "
        f"{celery['machine']['other_cpu_cores']:.2f} cores | |",
        "",
        verdict(product),
        "",
        f"Creates: {product['created']:,} in {product['create_span_s']:.1f} s = "
        f"**{product['creates_per_s']} escalations/s** through `POST /api/v1/escalations` "
        f"(per request p50 {product['create_p50_ms']} ms, p99 {product['create_p99_ms']} ms; "
        f"errors: {product['create_errors'] or 'none'}).",
    ]


def markdown(document: dict[str, Any]) -> str:
    burst, paced = document["loads"]["burst"], document["loads"]["paced"]
    machine, args = document["machine"], document["args"]
    loop, profile = document["loop"], document["profile"]
    stages = burst["product"]["stages"]
    create, send = profile["create"], profile["send"]
    lines = [
        "# Notification fan-out benchmark",
        "",
        f"`{document['command']}` (part of `make bench`), measured {document['measured']}; the "
        f"run took {document['elapsed_s']:.0f} s. Machine: {machine['nproc']} CPUs "
        f"({machine['cpu']}), {machine['memory_gib']} GiB, Python {machine['python']}, "
        f"PostgreSQL {machine['postgresql']}, Redis {machine['redis']}, Celery "
        f"{document['celery']}, Django {machine['django']}. Other work on the machine is in the "
        "tables (CPU used by processes that are not this benchmark's, PostgreSQL's or Redis's). "
        f"Code: {document['code']}.",
        "",
        "Each escalation notifies three operators with one contact point each — SMS via Twilio, "
        f"Telegram, Slack — sent by {args['workers']} Celery workers (`--pool solo`) to fake "
        "providers; daphne, beat, PostgreSQL, Redis, the fakes and the load generator share the "
        f"machine. {args['clients']} concurrent HTTP clients create the escalations. The Celery "
        "baseline replays the same arrivals as three bare tasks each (one provider request, no "
        "database) on the same workers, broker and fakes.",
        "",
        f"## {burst['escalations']:,} escalations × 3 contact points, created as fast as the API "
        "answers",
        "",
        *load_section(burst),
        "",
        f"## {paced['escalations']:,} escalations × 3 contact points, created at "
        f"{paced['rate']:g} per second",
        "",
        *load_section(paced),
        "",
        "## The fake providers alone",
        "",
        f"`bare_post` called from {args['workers']} threads of the bench process, no Celery: "
        f"**{loop['deliveries_per_s']} requests/s** accepted "
        f"({ratio(loop['deliveries_per_s'], burst['product']['deliveries_per_s'])} the burst's "
        f"deliveries/s), {loop['duplicates']} duplicates, {loop['losses']} losses"
        + (
            ": the fakes are not what limits the figures above."
            if loop["deliveries_per_s"] > 2 * (burst["product"]["deliveries_per_s"] or 0)
            else ": the fakes are close to the product's rate, so they limit it too."
        ),
        "",
        "## Where the time goes",
        "",
        f"Per delivery in the {burst['escalations']:,}-escalation run (from the delivery rows "
        "and the fakes' receipts):",
        "",
        "| stage | p50 | p99 | max |",
        "|---|---|---|---|",
        *(
            f"| {label} | {stages[name]['p50_ms']:,} ms | {stages[name]['p99_ms']:,} ms | "
            f"{stages[name]['max_ms']:,} ms |"
            for name, label in STAGES
        ),
        "",
        "One at a time in the bench process after the stack has stopped (medians of "
        f"{profile['escalations']} creates and their {profile['escalations'] * 3} sends, to the "
        "same fakes):",
        "",
        "| operation | wall | SQL queries | SQL time | provider call |",
        "|---|---|---|---|---|",
        f"| `escalation_create` with its fan-out hook | {create['wall_ms']} ms | "
        f"{create['queries']:g} | {create['sql_ms']} ms | – |",
        f"| `delivery_send`: claim, load, answer code, transport, record and audit | "
        f"{send['wall_ms']} ms | {send['queries']:g} | {send['sql_ms']} ms | "
        f"{send['http_ms']} ms |",
        "| for scale: making one `httpx.Client` (its TLS context loads the CA bundle) | "
        f"{profile['new_httpx_client_ms']} ms | | | |",
        "",
        document["analysis"],
        "",
        "## Method",
        "",
        METHOD,
    ]
    return "\n".join(lines) + "\n"


STAGES = (
    (
        "level_entered_to_delivery_row",
        "level entered → delivery row (create commit, fan-out hook in daphne)",
    ),
    (
        "delivery_row_to_receipt",
        "delivery row → provider receipt (enqueue, wait in Redis, claim, load, answer code, "
        "HTTP client and connect)",
    ),
    ("receipt_to_sent_at", "provider receipt → `sent_at` (the provider's answer)"),
)

METHOD = """\
- **Processes.** A fresh database (`awaithuman_bench_notifications`, migrated) and Redis db 5
  (flushed); production settings (`DATABASE_URL`, `REDIS_URL`, `TIMERS_IN_PROCESS=0`,
  `DEBUG=0`, `LOG_LEVEL=WARNING`, `RATE_LIMIT_DEFAULT` raised so one agent key may create them
  all): one `daphne awaithuman.asgi:application`, `celery beat`, and the workers
  (`celery -A awaithuman worker --pool solo --loglevel INFO --include bench.notification_fanout`).
  Solo: one process that runs one task at a time (with `acks_late` and prefetch 1 from the
  settings) — no prefork parent relaying each task to a child over a pipe, one process fewer per
  worker on a small machine, and the pool the live tests use. The workers' INFO lines give each
  task's run time.
- **Providers.** `FakeTwilio`, `FakeTelegram` and `FakeSlack` from
  `tests/notifications/fakes.py`, in a child process of their own (threaded HTTP servers that
  check auth and payloads like the real APIs). A receipt is an accepted request, time-stamped by
  the fake when its headers have arrived and named by the escalation's unique title in its text.
- **Data.** One organization, an agent with an API key, one policy (empty condition,
  `require_human`, level 1 → the role `operator`, no channel filter) and three operators, each
  with one contact point added, verified and moved above the account e-mail through the
  contact-point services: an SMS number, a Telegram chat and a Slack user the fakes know. Five
  warm-up escalations go through before the clock starts.
- **Product runs.** Escalations are POSTed by concurrent HTTP/1.1 clients (httpx), as fast as
  daphne answers or at a fixed rate (open loop). Clock start: `Escalation.level_entered_at`,
  set by the create service when the escalation enters level 1, before its commit (the same
  instant as its `created_at`). Clock stop: the fake's receipt of the delivery's first accepted
  request. Duplicates = receipts beyond the first per (escalation, channel); losses =
  (escalation, channel) pairs never received. The bench waits until all have arrived (at most
  120 s after the last create), then 10 s more for late duplicates. Stages come from the
  delivery rows (`created_at`, `sent_at`); queue depth is `LLEN celery` sampled every 0.2 s.
- **Celery baseline.** Right after each product run, its level-entered offsets replayed from the
  bench process: three `bare_post.delay()` per escalation at the same moments, on the same
  workers, broker and fakes. `bare_post` makes the same provider request as our transport on
  one reused httpx client per process and touches no database. Clock start: just before
  `delay()`. The ratio is what AwaitHuman adds to a bare task round trip: the create commit,
  the fan-out, the claim, the answer code, the audit events, the outcome, a new HTTP client
  per request — and the API's own work, which competes with the workers for the CPUs.
- **Fake providers alone.** `bare_post` called from threads of the bench process, closed loop.
- **Profile.** After the workers have stopped, the create service and `delivery_send` run one
  at a time in the bench process; SQL is timed with `connection.execute_wrapper`, the provider
  call by wrapping `notifications.transports.http.post`.
- Percentiles are nearest-rank over all deliveries; all clocks are this machine's wall clock.
"""


def analysis(loads: dict[str, Any], profile: dict[str, Any], workers: int) -> str:
    """What limits the figures, from the figures."""
    burst, paced = loads["burst"]["product"], loads["paced"]["product"]
    tasks, stages = burst["worker_tasks"], burst["stages"]
    send, client_ms = profile["send"], profile["new_httpx_client_ms"]
    if not tasks["mean_ms"]:
        return "No worker task times were found in the workers' logs."
    capacity = workers * 1000 / tasks["mean_ms"]
    offered = burst["creates_per_s"] * len(CHANNELS)
    parts = [
        f"In the burst a delivery takes {tasks['mean_ms']} ms of worker time on average "
        f"(the bare task: {loads['burst']['celery_baseline']['worker_tasks']['mean_ms']} ms), "
        f"so {workers} workers send at most about {capacity:.0f} deliveries/s here, while the "
        f"API offered {offered:.0f}/s ({burst['creates_per_s']} creates/s × 3)."
    ]
    if offered > capacity:
        parts.append(
            "The deliveries queue in Redis while the creates run (queue depth up to "
            f"{burst['queue_depth']['max']}) and the latency is mostly that wait: delivery row → "
            f"receipt p50 {stages['delivery_row_to_receipt']['p50_ms']:,} ms, against "
            f"{stages['level_entered_to_delivery_row']['p50_ms']} ms for the create commit and "
            "the fan-out. The tail is the end of the burst waiting for the backlog to drain, so "
            "the p99 grows with the burst's size; what decides it is the cost of one send."
        )
    if tasks["p50_ms"] and tasks["p50_ms"] > 1.5 * send["wall_ms"]:
        parts.append(
            f"In the burst a delivery takes {tasks['p50_ms'] / send['wall_ms']:.1f}× (p50) what a "
            f"send takes alone ({send['wall_ms']} ms, below): the workers share the CPUs with "
            "daphne creating escalations and with PostgreSQL, so more workers on the same "
            "machine would not add much."
        )
    below = paced["creates_per_s"] * len(CHANNELS) < capacity
    parts.append(
        f"{'Below' if below else 'At'} the workers' capacity ({paced['creates_per_s']} "
        "creates/s × 3) "
        f"the p99 is {(paced['p99_ms'] or 0) / 1000:.2f} s. A send alone takes "
        f"{send['wall_ms']} ms — {send['queries']:g} queries ({send['sql_ms']} ms) and a provider "
        f"call of {send['http_ms']} ms"
        + (
            f", of which about {client_ms} ms is making a new `httpx.Client` per request (its TLS "
            "context loads the CA bundle every time, even for an http:// URL) and "
            f"{max(0.0, send['http_ms'] - client_ms):.1f} ms the request itself."
            if send["http_ms"] >= 0.8 * client_ms
            else "."
        )
    )
    periodic = burst["periodic"]
    if periodic["longest_without_timers_s"] > 5:
        parts.append(
            "While the backlog lasts, beat's periodic tasks wait in the same queue behind the "
            "deliveries and expire there "
            f"({', '.join(f'{n} × `{name}`' for name, n in periodic['expired'].items())}): "
            f"the escalation timers did not run for {periodic['longest_without_timers_s']} s, "
            "so no escalation moved to its next level, was reminded or timed out meanwhile "
            "(the rows keep `next_action_at`, so the timers catch up once a tick gets through)."
        )
    not_claimed = sum(
        count
        for load in loads.values()
        for outcome, count in load["product"]["worker_tasks"]["outcomes"].items()
        if "not claimed" in outcome
    )
    if not_claimed:
        parts.append(
            f"{not_claimed} deliver tasks found their delivery taken already: the sweep "
            "re-queues every delivery still pending 60 s after it was written (it cannot tell a "
            "lost task from one waiting in a long queue), which adds work to a backlog."
        )
    return " ".join(parts)
