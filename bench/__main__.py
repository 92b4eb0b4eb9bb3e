"""``python -m bench [calibrate|cpu|burst|wake|held ...] [--quick] [--servers daphne,uvicorn]``.

Recreates the ``awaithuman_bench`` database, seeds it through the product's services, then runs
each selected scenario against each server and writes ``bench/RESULTS.md`` (and the raw figures
to ``bench/results.json``; scenarios not run this time keep their previous figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from . import report, scenarios, server
from .scenarios import Config

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
SCENARIOS = ("calibrate", "cpu", "burst", "wake", "held")
OPT_IN = ("diag",)  # diagnostics, run only when named


def log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller N")
    parser.add_argument("--servers", default="uvicorn,daphne", help="comma-separated")
    parser.add_argument(
        "--held-sizes", help="comma-separated waiter counts for 'held' (default 1000,5000,10000)"
    )
    parser.add_argument(
        "--source",
        help="serve this copy of the project (e.g. a snapshot of a tree being edited) "
        "instead of the one this bench lives in; uses this interpreter's environment",
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite RESULTS.md from results.json"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS) - set(OPT_IN))
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    args.scenarios = list(args.scenarios) or list(SCENARIOS)
    args.servers = [s for s in args.servers.split(",") if s]
    return args


async def main(args: argparse.Namespace) -> dict:
    cfg = Config.quick() if args.quick else Config()
    if args.source:
        server.ROOT = Path(args.source).resolve()
    if args.held_sizes:
        cfg.held_sizes = tuple(int(n) for n in args.held_sizes.split(","))
    pinned = server.pin_self()
    nofile = server.raise_nofile()
    log(
        f"bench: scenarios {', '.join(args.scenarios)} on {', '.join(args.servers)}"
        f"{' (quick)' if args.quick else ''}; load generator pinned to CPU "
        f"{server.CLIENT_CPU if pinned else '-'}, server to CPU {server.SERVER_CPU}; "
        f"open files {nofile}"
    )
    started = time.monotonic()
    seed = server.prepare_database(cfg.burst_agents)
    keys, operator_key = seed["agent_keys"], seed["operator_key"]
    took = time.monotonic() - started
    log(f"bench: database {server.DB_NAME} recreated and seeded in {took:.1f} s")

    results: dict = {"scenarios": {}}
    held_ids: list[str] | None = None
    pool: list[str] = []  # pending escalations left by the burst, reused by wake and held
    if "calibrate" in args.scenarios:
        log("calibrate: load generator")
        results["scenarios"]["calibrate"] = await scenarios.calibrate(
            args.servers[-1], 3.0 if not args.quick else 1.5, log
        )
    if "cpu" in args.scenarios:
        log("cpu: CPU per call of the hot paths, in-process")
        cost = server.cpu_cost()
        results["scenarios"]["cpu"] = cost
        log(
            "  "
            + ", ".join(
                f"{name} {c['cpu_ms']:.2f} ms CPU ({c['wall_ms']:.2f} wall)"
                for name, c in cost.items()
            )
        )
    for kind in args.servers:
        needs_app = any(s in args.scenarios for s in ("burst", "wake", "held"))
        if not needs_app:
            continue
        if "burst" in args.scenarios or "wake" in args.scenarios:
            srv = server.Server(kind)
            await srv.start()
            try:
                if "burst" in args.scenarios:
                    log(f"burst: {kind}")
                    t0 = time.monotonic()
                    meter = server.CpuMeter()
                    res = await scenarios.run_burst(srv, keys, cfg, pool, log)
                    noise = meter.stop()
                    log(f"  other processes used {noise['other_cpu_cores']:.2f} cores meanwhile")
                    res["elapsed_s"] = time.monotonic() - t0
                    res["noise"] = noise
                    results["scenarios"].setdefault("burst", {})[kind] = res
                    args.checkpoint(results)
                if "wake" in args.scenarios:
                    log(f"wake: {kind}")
                    t0 = time.monotonic()
                    meter = server.CpuMeter()
                    res = await scenarios.run_wake(srv, keys, operator_key, cfg, pool, log)
                    noise = meter.stop()
                    log(f"  other processes used {noise['other_cpu_cores']:.2f} cores meanwhile")
                    res["elapsed_s"] = time.monotonic() - t0
                    res["noise"] = noise
                    results["scenarios"].setdefault("wake", {})[kind] = res
                    args.checkpoint(results)
                if held_ids is None and "held" in args.scenarios:
                    held_ids = await scenarios.take_pending(srv.port, keys, pool, cfg.held_pool)
            finally:
                srv.stop()
        if "held" in args.scenarios:
            if held_ids is None:
                srv = server.Server(kind)
                await srv.start()
                try:
                    held_ids = await scenarios.take_pending(srv.port, keys, pool, cfg.held_pool)
                finally:
                    srv.stop()
            log(f"held: {kind}")
            t0 = time.monotonic()
            meter = server.CpuMeter()
            res = await scenarios.run_held(kind, keys, held_ids, cfg, log)
            noise = meter.stop()
            log(f"  other processes used {noise['other_cpu_cores']:.2f} cores meanwhile")
            results["scenarios"].setdefault("held", {})[kind] = {
                "sizes": res,
                "seconds": cfg.held_seconds,
                "elapsed_s": time.monotonic() - t0,
                "noise": noise,
            }
            args.checkpoint(results)
    if "diag" in args.scenarios:
        log("diag: held waiters without a channel layer (uvicorn, 1,000)")
        srv = server.Server("uvicorn")
        await srv.start()
        try:
            ids = await scenarios.take_pending(srv.port, keys, pool, cfg.held_pool)
        finally:
            srv.stop()
        n = 1000
        res = await scenarios.held_one(
            "uvicorn",
            "bench.baseline_app:application",
            n,
            keys,
            ids,
            cfg,
            log,
            env={"BENCH_NO_CHANNEL_LAYER": "1"},
        )
        results["diagnostics"] = {"no_channel_layer": res}
    results["elapsed_s"] = time.monotonic() - started
    return results


def save(fresh: dict, argv: list[str], quick: bool, previous: dict) -> dict:
    """Merge this run's figures into results.json and rewrite RESULTS.md (after each scenario)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    merged = json.loads(json.dumps(previous.get("scenarios", {})))
    label = stamp + (" (quick)" if quick else "")
    for name, data in fresh["scenarios"].items():
        if name in ("calibrate", "cpu"):
            merged[name] = data | {"measured": label}
        else:
            merged[name] = merged.get(name, {}) | {
                kind: figures | {"measured": label} for kind, figures in data.items()
            }
    diagnostics = dict(previous.get("diagnostics", {}))
    for name, data in fresh.get("diagnostics", {}).items():
        diagnostics[name] = data | {"measured": label}
    document = {
        "machine": report.machine(),
        "scenarios": merged,
        "diagnostics": diagnostics,
        "last_run": {
            "at": stamp,
            "argv": argv,
            "quick": quick,
            "elapsed_s": fresh.get("elapsed_s", 0.0),
            "complete": "elapsed_s" in fresh,
        },
    }
    RESULTS_JSON.write_text(json.dumps(document, indent=1, default=float) + "\n")
    (HERE / "RESULTS.md").write_text(report.markdown(document))
    return document


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        document = json.loads(RESULTS_JSON.read_text())
        print(report.table(document))
        (HERE / "RESULTS.md").write_text(report.markdown(document))
        return 0
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    previous = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    args.checkpoint = lambda fresh: save(fresh, argv, args.quick, previous)
    fresh = runner(main(args))
    document = save(fresh, argv, args.quick, previous)
    print()
    print(report.table(document))
    print(f"\nwrote {HERE / 'RESULTS.md'} ({fresh['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
