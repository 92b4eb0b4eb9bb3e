"""RESULTS.md § What limits the figures: the product bottlenecks, with the measured numbers."""

from __future__ import annotations

import math


def _get(d: dict, *path, default=math.nan):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def _best(section: dict) -> str | None:
    for kind in ("uvicorn", "daphne"):
        if kind in section:
            return kind
    return None


def limits(doc: dict) -> list[str]:
    sc = doc["scenarios"]
    cpu, burst, wake, held = (sc.get(k, {}) for k in ("cpu", "burst", "wake", "held"))
    out = ["## What limits the figures", ""]

    # 1. creates
    kind = _best(burst)
    if kind:
        b = burst[kind]
        sp, sb = b["sustained"]["product"], b["sustained"]["baseline"]
        ms_create = sp["server_cpu_share"] * 1e3 / sp["rps"]
        ms_insert = sb["server_cpu_share"] * 1e3 / sb["rps"]
        p50 = b["burst"]["product"]["p50_ms"]
        base50 = b["burst"]["baseline"]["p50_ms"]
        text = (
            "1. **Creates are bound by Python CPU in the one server process and by the "
            f"organization's audit lock.** During the sustained run ({kind}) the server core was "
            f"{sp['server_cpu_share']:.0%} busy at {sp['rps']:.0f} creates/s: "
            f"**{ms_create:.1f} ms of server CPU per create**, against {ms_insert:.1f} ms per "
            f"bare insert ({ms_create / ms_insert:.1f}×)."
        )
        if cpu:
            text += (
                f" In-process the create path costs {cpu['create']['cpu_ms']:.1f} ms CPU and "
                f"{cpu['create'].get('queries', '?')} SQL statements (bare insert "
                f"{cpu['bare_insert']['cpu_ms']:.1f} ms, 1 statement): the key lookup with three "
                "`select_related` joins, DRF validation (every serializer's fields are deep-copied "
                "per request), the escalation INSERT, the audit chain (chain-head upsert, "
                "`SELECT … FOR UPDATE`, event INSERT, head UPDATE), DRF rendering and the "
                "after-commit hooks (the policy engine and the operators' live-queue broadcast "
                "where the tree has them) — ORM query compilation and DRF field machinery, no "
                "single hot spot."
            )
        if "db_lock_waiting_mean" in sp:
            text += (
                f" PostgreSQL is not idle either: on average {sp['db_active_mean']:.1f} of the "
                f"pool's backends were active and {sp['db_lock_waiting_mean']:.1f} of them "
                "waiting on a lock (bare insert: "
                f"{sb['db_lock_waiting_mean']:.1f}) — creates of one organization queue on "
                "the audit chain-head row lock (`select_for_update`), held from the audit "
                "write through COMMIT (an fsync), so they commit one at a time."
            )
            if sp["db_lock_waiting_mean"] >= 0.5 * max(sp["db_active_mean"], 1):
                text += (
                    f" With nearly every active backend queued on that lock, throughput is "
                    f"1 / hold time: the implied hold is ≈ {1e3 / sp['rps']:.0f} ms per create, "
                    "far more than its three statements and a commit take on an idle server — "
                    "the holding request thread has to win the GIL back from the other request "
                    "threads and the event loop for every statement, so the lock is held across "
                    "Python scheduling delays. Fix: take the chain-head lock as late as possible "
                    "and do nothing in Python while holding it (compute the hash in SQL, or "
                    "append the event in one statement / a deferred per-organization "
                    "sequencer), or keep the audit append off the request's critical section."
                )
        text += (
            f" A burst of 200 is therefore ≈ 200 × {ms_create:.1f} ms ≈ "
            f"{200 * ms_create / 1e3:.1f} s of CPU on one core (measured p50 {p50:,.0f} ms); "
            f"even the bare Django insert needs {base50:,.0f} ms for 200, because Django's ASGI "
            "handler runs every request — async views included, since `RequestIdMiddleware` is "
            "sync-only — on a new thread of its own. The 250-ms target needs ≤ 1.25 ms of server "
            "CPU per create per core: out of reach for one Django process; at today's cost it "
            f"takes ≈ {p50 / 250:.0f} server processes on as many cores, or a create path "
            "several times cheaper — and more processes help one organization only as far as "
            "its chain-head lock lets commits through."
        )
        out += [text, ""]

    # 2. the wait consumer's single thread
    hk = _best(held)
    sizes = held[hk]["sizes"] if hk else {}
    wk = _best(wake)
    if sizes or wk:
        text = (
            "2. **The wait consumer serialises all its database work on one thread per "
            "process.** `WaitConsumer` calls `database_sync_to_async(wait_open)` and "
            "`database_sync_to_async(wait_read)`; Channels' `database_sync_to_async` is "
            "`SyncToAsync(thread_sensitive=True)`, and outside a Django request (no "
            "`ThreadSensitiveContext`) asgiref runs every thread-sensitive call on one "
            "process-wide single-thread executor. Every waiter's open"
        )
        if cpu:
            text += (
                f" ({cpu['wait_open']['cpu_ms']:.1f} ms CPU, {cpu['wait_open'].get('queries', '?')}"
                f" SQL statements + a Redis round trip) and every wake's re-read "
                f"({cpu['wait_read']['cpu_ms']:.1f} ms CPU)"
            )
        else:
            text += " and every wake's re-read"
        text += " queue there one at a time, sharing the GIL with the event loop."
        facts = []
        for n, pair in sizes.items():
            p, r = pair["product"], pair["baseline"]
            fact = (
                f"{int(n):,} waiters parked in {p['park_s']:.1f} s "
                f"({p['park_s'] / int(n) * 1e3:.1f} ms each; raw ASGI {r['park_s']:.2f} s)"
            )
            if p["early_returns"]:
                fact += (
                    f", and {p['early_returns']:,} of them reached their 60-s timeout before the "
                    "last one was parked — one process cannot hold that many at once"
                )
            facts.append(fact)
        if facts:
            text += f" Measured ({hk}): " + "; ".join(facts) + "."
        if wk:
            w = wake[wk]["product"]
            text += (
                f" In (b) the decisions come one at a time, so the queue is short and wake p99 "
                f"is {w['p99_ms']:.1f} ms; a decision that wakes K waiters at once (or K decisions "
                "in the same instant) returns them one re-read apart"
            )
            text += f", ≈ K × {cpu['wait_read']['wall_ms']:.1f} ms." if cpu else "."
        text += (
            " Product fix: make the open and re-read cheap and off that thread — e.g. "
            "`thread_sensitive=False` (with `close_old_connections` around each call) or async "
            "psycopg for these two reads, a per-process cache of key authentication, the pending "
            "case answered without DRF serialisation, and `.first()` (which adds `ORDER BY id`) "
            "replaced by `.get()` on the unique `public_id`."
        )
        out += [text, ""]

    # 3. memory per waiter
    if sizes:
        per = [
            (int(n), pair["product"]["rss_per_waiter_kib"], pair["baseline"]["rss_per_waiter_kib"])
            for n, pair in sizes.items()
        ]
        parts = ", ".join(f"{n:,}: {p:.1f} KiB vs {r:.1f} KiB" for n, p, r in per)
        text = (
            f"3. **Memory per waiter is {per[0][1] / per[0][2]:.1f}× the raw app's** ({hk}; "
            f"{parts}). Each long-poll is a full Channels `AsyncHttpConsumer` that keeps, for the "
            "whole wait: the consumer instance and its `await_many_dispatch` tasks, with the "
            "Redis channel layer configured a per-request channel (`new_channel()`) and a "
            "pending `receive` on it (unused by `/wait`), the `wait_for(shield(future))` pair, "
            "and the first read's `Reply` — the serialised escalation as a Python dict — which "
            "is never sent (the consumer re-reads on wake and at the deadline)."
        )
        diag = doc.get("diagnostics", {}).get("no_channel_layer")
        if diag:
            text += (
                f" Diagnostic ({diag['measured']}, `python -m bench diag`): with `CHANNEL_LAYERS` "
                f"empty the product measured {diag['rss_per_waiter_kib']:.1f} KiB per waiter at "
                f"{diag['waiters']:,} waiters, so the channel layer is only a small part; the "
                "bench does not split the rest (tracemalloc on a parked server would)."
            )
        text += (
            " Product fix: keep only the ids while parked (drop the first `Reply` body once "
            "it is known to be pending), set `channel_layer_alias = None` on the consumer, or "
            "serve `/wait` as a plain ASGI callable like `bench/raw_wait.py`."
        )
        out += [text, ""]
        flat = all(
            pair["product"]["held"]["threads"] <= pair["product"]["idle"]["threads"] + 2
            and pair["product"]["held"]["db_connections"]
            <= pair["product"]["idle"]["db_connections"] + 2
            for pair in sizes.values()
        )
        hz = ", ".join(
            f"{int(n):,}: {pair['product']['idle']['healthz']['p99_ms']:.1f} → "
            f"{pair['product']['held']['healthz']['p99_ms']:.1f} ms"
            for n, pair in sizes.items()
        )
        out += [
            f"4. **Threads and database connections {'stay flat' if flat else 'grow'}** while "
            "waiters are held (the design's main point holds: no thread and no connection per "
            f"waiter). `/healthz` p99 idle → held: {hz}. `/healthz` is a Django view, so it "
            "pays Django's thread-per-request hop; its idle p99 is already several ms on the "
            "server's single core.",
            "",
        ]
    if wk:
        w = wake[wk]["product"]
        out += [
            f"5. **Wake latency is set by the decision, not the wake.** The PUBLISH runs in the "
            f"decision's `on_commit`, before Django renders the operator's own response, so the "
            f"waiter usually has its answer first (median {w['p50_ms']:+.1f} ms relative to the "
            f"decision's response; p99 {w['p99_ms']:.1f} ms). From the moment the operator sends "
            f"the decision to the agent's return: p50 {w['decision_to_wake_p50_ms']:.0f} ms, p99 "
            f"{w['decision_to_wake_p99_ms']:.0f} ms — the decision request itself (key lookup, "
            "row lock, response, audit, commit) is the cost.",
            "",
        ]
    return out
