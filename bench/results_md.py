"""RESULTS.md: method, machine, the figures with their baselines, targets, and what limits them."""

from __future__ import annotations

import math

from .report import _f, _ratio, _servers

METHOD = """\
- **Processes.** The server is the production one, started as a subprocess for each scenario:
  `daphne -v 0 -b 127.0.0.1 -p PORT bench.baseline_app:application` and
  `uvicorn bench.baseline_app:application --port PORT --no-access-log --loop uvloop --http
  httptools` (`-v 0` turns Daphne's access log off, as `--no-access-log` does for Uvicorn).
  `bench.baseline_app` *is* `awaithuman.asgi.application` (same object, same routing: the wait
  consumer ahead of Django) loaded with `bench.settings`, which is `awaithuman.settings` plus one
  URL, `/bench/insert`, so the product and its create baseline share one process, server, middleware
  stack and connection pool. Environment: `DATABASE_URL=postgresql://…/awaithuman_bench`,
  `REDIS_URL=redis://127.0.0.1:6379/3`, `TIMERS_IN_PROCESS=0`, `DEBUG=0`, a 64-character
  `SECRET_KEY`, `ALLOWED_HOSTS=127.0.0.1,localhost`, `LOG_LEVEL=WARNING`, and
  `RATE_LIMIT_DEFAULT=100000000` (every request still does its Redis `INCR`; the limit is raised
  only because one operator key decides 3,000+ escalations a run).
- **Pinning.** Server on CPU 0 (`taskset -c 0`), load generator on CPU 1
  (`sched_setaffinity`); PostgreSQL and Redis float. Open files raised with `ulimit -n` /
  `setrlimit` (up to the container's hard limit).
- **Data.** Every invocation drops and recreates `awaithuman_bench`, migrates it, empties Redis
  db 3 and seeds one organization, 200 agents each with its own key (`agent_create` +
  `api_key_create`) and one operator member with a personal key (`membership_add` +
  `api_key_create`). Escalations for (b) and (c) are the pending ones created by (a).
- **Load generator.** Raw HTTP/1.1 over asyncio sockets (uvloop), responses parsed by httptools
  and time-stamped in the parser callback when their last byte arrives. httpx was measured against
  the same server and rejected: see § Load generator.
- **Runs.** Each scenario warms up, then measures 3 runs; the tables give the median of the runs
  (per-run figures are in `bench/results.json`). Baselines are measured in the same invocation,
  against the same server process where they can be, interleaved with the product runs.
- **(a) burst.** 200 pre-opened connections, one per agent key; all 200
  `POST /api/v1/escalations` are written in one loop iteration; the figure is the time from the
  first write to the last acknowledgement (201). {rounds} rounds per run, p50/p99 over the rounds
  (with 20 or fewer rounds, p99 is the slowest round). Baseline: the same burst against
  `/bench/insert`, a
  bare `async def` Django view doing one `INSERT … RETURNING id` of the same JSON body through
  `sync_to_async`. **Sustained**: {conc} connections, closed loop, {secs:g} s per run, same
  product/baseline pair.
- **(b) wake.** {waiters} pending escalations, one `GET …/wait?timeout=60` each on its own
  connection (keys round-robin over the 200 agents); once all are parked, the operator decides them
  one at a time (`POST …/responses {{"outcome": "approve"}}` with the personal key) and for each we
  take *waiter's last byte − decision's last byte*. Negative means the waiter had its answer before
  the operator had theirs (the PUBLISH happens on commit, before Django renders the decision's own
  response). Baseline: PUBLISH → subscriber round trip with two redis.asyncio clients, {waiters}
  sequential messages, in the same run.
- **(c) held.** A fresh server per size and app. Idle figures after a warm-up (100 `/healthz`,
  10 short waits so the dispatcher's subscription is up); then N connections each park one
  `…/wait?timeout=60` (round-robin over 1,000 pending escalations and the 200 keys); after all
  are parked (a `timeout=0` sentinel sent behind them has returned), held for {held:g} s:
  VmRSS and Threads from `/proc/PID/status` (max of 1-s samples), backends in `pg_stat_activity`
  for `awaithuman_bench` (max), and `/healthz` latency (sequential, {hz} requests × 3 runs, median
  of the p99s) idle vs held. RSS per waiter = (held − idle) / N. Baseline: `bench/raw_wait.py`, the
  same wait as a 20-line raw ASGI app (parks on a future; `/healthz` answers at once), served by
  the same server software.
"""


def _targets(rows: list[tuple[str, ...]]) -> list[str]:
    out = []
    for figure, server, product, _base, _r, target in rows:
        if target:
            out.append(
                f"- {'✅' if target.endswith('met') else '❌'} {figure} — {server}: "
                f"{product} ({target.replace('**', '')})"
            )
    return out


def _md_table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return lines


def _nan(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def render(doc: dict, rows: list[tuple[str, ...]]) -> str:
    sc = doc["scenarios"]
    m = doc["machine"]
    last = doc["last_run"]
    burst, wake, held = sc.get("burst", {}), sc.get("wake", {}), sc.get("held", {})
    any_burst = next((burst[k] for k in _servers(burst)), None)
    any_wake = next((wake[k] for k in _servers(wake)), None)
    any_held = next((held[k] for k in _servers(held)), None)
    lines = [
        "# AwaitHuman — benchmark results",
        "",
        f"Written by `make bench` (`{' '.join(['python -m bench', *last['argv']])}`) on "
        f"{last['at']} in {last['elapsed_s'] / 60:.1f} min. Each section says when its figures "
        "were measured; a subset run (`python -m bench burst|wake|held`) keeps the others. "
        "The figures and their targets are those of issues #2 and #11.",
        "",
        "## Summary",
        "",
        *_conditions(doc),
        *_md_table(("figure", "server", "AwaitHuman", "baseline", "ratio", "target"), rows),
        "",
        "### Targets",
        "",
        *_targets(rows),
        "",
    ]
    lines += _limits(doc)
    lines += [
        "## Method",
        "",
        METHOD.format(
            rounds=any_burst["rounds"] if any_burst else 20,
            conc=any_burst["sustained"]["concurrency"] if any_burst else 32,
            secs=any_burst["sustained"]["seconds"] if any_burst else 10,
            waiters=any_wake["waiters"] if any_wake else 1000,
            held=any_held["seconds"] if any_held else 20,
            hz=200,
        ),
        "## Machine",
        "",
        f"- {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}",
        f"- Python {m['python']}, Django {m['django']}, Channels {m['channels']}, "
        f"Daphne {m['daphne']}, Uvicorn {m['uvicorn']} (uvloop {m['uvloop']}, httptools "
        f"{m['httptools']}), psycopg {m['psycopg']}, redis-py {m['redis_py']}",
        f"- PostgreSQL {m['postgresql']}, Redis {m['redis']}, both on 127.0.0.1",
        "",
    ]
    cal = sc.get("calibrate")
    if cal:
        raw, hx = cal["raw"], cal["httpx"]
        hx1 = cal.get("httpx_sequential", {"rps": math.nan, "client_cpu_us_per_req": math.nan})
        hx1.setdefault("p99_ms", math.nan)
        lines += [
            "## Load generator",
            "",
            f"Measured {cal['measured']} against {cal['server']} serving the raw ASGI app's "
            "`/healthz` (the cheapest endpoint there is), 32 keep-alive connections, "
            "client pinned to one core:",
            "",
            *_md_table(
                ("client", "req/s", "client CPU per request", "p99"),
                [
                    (
                        "raw asyncio sockets + httptools (used)",
                        _f(raw["rps"], 0),
                        f"{_f(raw['client_cpu_us_per_req'], 0)} µs",
                        f"{_f(raw['p99_ms'], 2)} ms",
                    ),
                    (
                        "httpx.AsyncClient, 32 concurrent",
                        _f(hx["rps"], 0),
                        f"{_f(hx['client_cpu_us_per_req'], 0)} µs",
                        f"{_f(hx['p99_ms'], 1)} ms",
                    ),
                    (
                        "httpx.AsyncClient, one at a time",
                        _f(hx1["rps"], 0),
                        f"{_f(hx1['client_cpu_us_per_req'], 0)} µs",
                        f"{_f(hx1['p99_ms'], 2)} ms",
                    ),
                ],
            ),
            "",
            "httpx saturates its core at a few hundred requests per second, so a 200-request "
            "burst would measure httpx (≈ 200 × its per-request cost) rather than the server; the "
            "raw client leaves the load-generator core mostly idle at the rates below.",
            "",
        ]
    cpu = sc.get("cpu")
    if cpu:
        lines += [
            "## CPU per call, in-process",
            "",
            f"Measured {cpu['measured']} by `bench/cpu_cost.py` (Django's test client and direct "
            "calls, no server, pinned to CPU 0, 300 calls after 30 warm-up). Wall includes "
            "waiting for PostgreSQL/Redis.",
            "",
            *_md_table(
                ("path", "CPU ms/call", "wall ms/call", "SQL statements"),
                [
                    (
                        name,
                        _f(c["cpu_ms"], 2),
                        _f(c["wall_ms"], 2),
                        str(c.get("queries", "")),
                    )
                    for name, c in cpu.items()
                    if isinstance(c, dict)
                ],
            ),
            "",
        ]
    if burst:
        lines += ["## (a) Burst and sustained creates", ""]
        body = []
        for kind in _servers(burst):
            r = burst[kind]
            for name in ("product", "baseline"):
                for i, run in enumerate(r["burst"][name]["runs"], 1):
                    body.append(
                        (
                            kind,
                            "POST /api/v1/escalations" if name == "product" else "/bench/insert",
                            str(i),
                            _f(run["p50_ms"], 0),
                            _f(run["p99_ms"], 0),
                            str(run["errors"]),
                        )
                    )
        lines += [
            "Bursts of 200 ("
            + ", ".join(f"{k}: {burst[k]['measured']}" for k in _servers(burst))
            + ")",
            "",
            *_md_table(("server", "endpoint", "run", "p50 ms", "p99 ms", "errors"), body),
            "",
        ]
        body = []
        for kind in _servers(burst):
            r = burst[kind]
            for name in ("product", "baseline"):
                for i, run in enumerate(r["sustained"][name]["runs"], 1):
                    body.append(
                        (
                            kind,
                            "POST /api/v1/escalations" if name == "product" else "/bench/insert",
                            str(i),
                            _f(run["rps"], 0),
                            _f(run["p50_ms"], 0),
                            _f(run["p99_ms"], 0),
                            f"{run['server_cpu_share']:.0%}",
                            str(run["errors"]),
                        )
                    )
        lines += [
            "Sustained, closed loop",
            "",
            *_md_table(
                ("server", "endpoint", "run", "req/s", "p50 ms", "p99 ms", "server CPU", "errors"),
                body,
            ),
            "",
        ]
    if wake:
        lines += [
            "## (b) Wake",
            "",
            "*Re-waits*: waits that reached their 60-s timeout still pending and were re-sent, as "
            "the SDK does — 1,000 decisions one at a time can outlast one wait.",
            "",
        ]
        body = []
        for kind in _servers(wake):
            r = wake[kind]
            for i, (run, base) in enumerate(
                zip(r["product"]["runs"], r["baseline"]["runs"], strict=True), 1
            ):
                body.append(
                    (
                        kind,
                        str(i),
                        f"{_f(run['p50_ms'], 2)} / {_f(run['p99_ms'], 2)} / {_f(run['max_ms'], 1)}",
                        f"{_f(run['decision_to_wake_p50_ms'], 1)} / "
                        f"{_f(run['decision_to_wake_p99_ms'], 1)}",
                        f"{_f(run['park_s'], 1)} s",
                        str(run.get("rewaits", "–")),
                        str(run["errors"]),
                        f"{_f(base['p50_ms'], 2)} / {_f(base['p99_ms'], 2)} / "
                        f"{_f(base['max_ms'], 1)}",
                    )
                )
        lines += [
            ", ".join(f"{k}: {wake[k]['measured']}" for k in _servers(wake)),
            "",
            *_md_table(
                (
                    "server",
                    "run",
                    "waiter − decision response p50/p99/max ms",
                    "decision sent → waiter back p50/p99 ms",
                    f"park {any_wake['waiters']}",
                    "re-waits",
                    "errors",
                    "Redis PUBLISH→subscriber p50/p99/max ms",
                ),
                body,
            ),
            "",
        ]
    if held:
        lines += ["## (c) Held waiters", ""]
        body = []
        for kind in _servers(held):
            for n, pair in held[kind]["sizes"].items():
                for app in ("product", "baseline"):
                    x = pair[app]
                    body.append(
                        (
                            kind,
                            "AwaitHuman" if app == "product" else "raw ASGI",
                            f"{int(n):,}",
                            f"{x['idle']['rss_kib'] / 1024:.1f} → "
                            f"{x['held']['rss_kib'] / 1024:.1f}",
                            _f(x["rss_per_waiter_kib"]),
                            f"{x['idle']['threads']} → {x['held']['threads']}",
                            f"{x['idle']['db_connections']} → {x['held']['db_connections']}",
                            f"{_f(x['idle']['healthz']['p99_ms'], 2)} → "
                            f"{_f(x['held']['healthz']['p99_ms'], 2)}",
                            f"{_f(x['park_s'], 1)} s",
                            str(x["early_returns"]),
                        )
                    )
        lines += [
            ", ".join(f"{k}: {held[k]['measured']}" for k in _servers(held)),
            "",
            *_md_table(
                (
                    "server",
                    "app",
                    "waiters",
                    "RSS MiB idle → held",
                    "KiB/waiter",
                    "threads",
                    "DB backends",
                    "/healthz p99 ms",
                    "time to park",
                    "returned early",
                ),
                body,
            ),
            "",
            "*Returned early*: waits that came back before the hold ended — with a 60-s wait, "
            "only possible when parking the whole set took longer than the wait itself.",
            "",
        ]
    lines += _versus(doc)
    return "\n".join(lines).rstrip() + "\n"


def _conditions(doc: dict) -> list[str]:
    """How much *other* work shared the machine while each scenario ran."""
    sc = doc["scenarios"]
    parts = []
    for name in ("burst", "wake", "held"):
        for kind in _servers(sc.get(name, {})):
            noise = sc[name][kind].get("noise")
            if noise:
                parts.append(
                    f"{name}/{kind} {noise['other_cpu_cores']:.2f} cores "
                    f"(load {noise['loadavg_1m']:.1f})"
                )
    if not parts:
        return []
    return [
        "**Conditions.** The 2-core machine was shared with other work while the bench ran "
        "(CPU used by processes other than the bench, its servers, PostgreSQL and Redis, "
        "averaged over each scenario: " + "; ".join(parts) + "). Figures that depend on the "
        "server's core (creates, parking, /healthz) are lower than on a quiet machine; the "
        "ratios to baselines measured in the same minutes are the figures to trust.",
        "",
    ]


def _versus(doc: dict) -> list[str]:
    sc = doc["scenarios"]
    body = []
    burst, wake, held = sc.get("burst", {}), sc.get("wake", {}), sc.get("held", {})

    def add(label: str, d: float | None, u: float | None, better: str) -> None:
        if _nan(d) or _nan(u):
            return
        body.append((label, _f(d, 2), _f(u, 2), _ratio(u, d), better))

    if "daphne" in burst and "uvicorn" in burst:
        d, u = burst["daphne"], burst["uvicorn"]
        add(
            "burst 200, p50 ms",
            d["burst"]["product"]["p50_ms"],
            u["burst"]["product"]["p50_ms"],
            "lower",
        )
        add(
            "sustained creates req/s",
            d["sustained"]["product"]["rps"],
            u["sustained"]["product"]["rps"],
            "higher",
        )
        add(
            "bare insert req/s",
            d["sustained"]["baseline"]["rps"],
            u["sustained"]["baseline"]["rps"],
            "higher",
        )
    if "daphne" in wake and "uvicorn" in wake:
        d, u = wake["daphne"], wake["uvicorn"]
        add("wake p99 ms", d["product"]["p99_ms"], u["product"]["p99_ms"], "lower")
        add(
            "decision sent → waiter back p50 ms",
            d["product"]["decision_to_wake_p50_ms"],
            u["product"]["decision_to_wake_p50_ms"],
            "lower",
        )
        add("park 1,000 waiters s", d["product"]["park_s"], u["product"]["park_s"], "lower")
    if "daphne" in held and "uvicorn" in held:
        for n in held["daphne"]["sizes"]:
            if n in held["uvicorn"]["sizes"]:
                d, u = held["daphne"]["sizes"][n]["product"], held["uvicorn"]["sizes"][n]["product"]
                add(
                    f"{int(n):,} held: KiB per waiter",
                    d["rss_per_waiter_kib"],
                    u["rss_per_waiter_kib"],
                    "lower",
                )
                add(
                    f"{int(n):,} held: /healthz p99 ms",
                    d["held"]["healthz"]["p99_ms"],
                    u["held"]["healthz"]["p99_ms"],
                    "lower",
                )
    if not body:
        return []
    return [
        "## (d) Daphne vs Uvicorn",
        "",
        *_md_table(
            ("AwaitHuman figure", "Daphne", "Uvicorn", "Uvicorn ÷ Daphne", "better is"), body
        ),
        "",
    ]


def _limits(doc: dict) -> list[str]:
    """What limits the figures, from the measured numbers (numbers only where measured)."""
    from .analysis import limits

    return limits(doc)
