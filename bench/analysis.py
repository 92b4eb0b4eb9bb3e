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
            "1. **Creates are bound by Python CPU in the one server process.** During the "
            f"sustained run ({kind}) the server core was {sp['server_cpu_share']:.0%} busy at "
            f"{sp['rps']:.0f} creates/s: **{ms_create:.1f} ms of server CPU per create**, against "
            f"{ms_insert:.1f} ms per bare insert ({ms_create / ms_insert:.1f}×)."
        )
        if cpu:
            text += (
                f" In-process the create path costs {cpu['create']['cpu_ms']:.1f} ms CPU and "
                f"{cpu['create'].get('queries', '?')} statements counting BEGIN and COMMIT (bare "
                f"insert {cpu['bare_insert']['cpu_ms']:.1f} ms): the enabled policies, the "
                "escalation INSERT, its outbox rows and its unsealed audit event; the API key "
                "comes from the per-process cache, and notifications, callbacks, webhooks and "
                "live frames run later in the dispatcher, not in the request. What is left is "
                "Django's and DRF's request machinery and ORM statement compilation, spread "
                "thin; py-spy shows no single hot spot."
            )
        if "db_lock_waiting_mean" in sp:
            text += (
                f" No queue in PostgreSQL: on average {sp['db_active_mean']:.1f} of the pool's "
                f"backends were active and {sp['db_lock_waiting_mean']:.1f} waiting on a lock "
                "at 32 "
                "concurrent creates of one organization (audit events are sealed after commit, "
                "so no writer takes the chain-head lock)."
            )
        text += (
            f" A burst of 200 is therefore ≈ 200 × {ms_create:.1f} ms ≈ "
            f"{200 * ms_create / 1e3:.1f} s of CPU on one core (measured p50 {p50:,.0f} ms); "
            f"the bare Django insert needs {base50:,.0f} ms for 200, because Django's ASGI "
            "handler runs every request on a thread of its own (`RequestIdMiddleware` is "
            "sync-only). More web processes scale creates with cores: nothing in the create "
            "path is shared by one organization's requests."
        )
        out += [text, ""]

    # 2. the wait consumer's single thread
    hk = _best(held)
    sizes = held[hk]["sizes"] if hk else {}
    wk = _best(wake)
    if sizes or wk:
        text = (
            "2. **Waits.** `/wait` is a plain ASGI callable ahead of Django: it authenticates "
            "(key cache) and reads on the thread pool, parks on a future with no thread and no "
            "connection, and re-reads through a batch reader: every waiter woken or timed out "
            "while the previous read ran is read in the next single query."
        )
        if cpu:
            text += (
                f" An open costs {cpu['wait_open']['cpu_ms']:.1f} ms CPU in-process, a re-read "
                f"{cpu['wait_read']['cpu_ms']:.1f} ms."
            )
        facts = []
        for n, pair in sizes.items():
            p, r = pair["product"], pair["baseline"]
            facts.append(
                f"{int(n):,} waiters parked in {p['park_s']:.1f} s "
                f"({p['park_s'] / int(n) * 1e3:.1f} ms each; raw ASGI {r['park_s']:.2f} s)"
            )
        if facts:
            text += f" Measured ({hk}): " + "; ".join(facts) + "."
        if wk and "together" in wake[wk]:
            t = wake[wk]["together"]
            text += (
                f" {t['waiters']} decisions sent at once woke their waiters p50 "
                f"{t['p50_ms']:.0f} ms / p99 {t['p99_ms']:.0f} ms after each decision's response "
                "(the decisions themselves compete for the same core)."
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
