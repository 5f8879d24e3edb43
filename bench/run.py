"""Run Freshet's benchmarks and write their sections of BENCHMARKS.md.

``python -m bench.run`` runs every benchmark, ``python -m bench.run ingest`` one of them. Each
benchmark starts its own servers, prints its table and replaces only its own section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench import broker, common, ingest, serve, transform


def _ingest(args: argparse.Namespace) -> tuple[str, str]:
    settings = ingest.Settings(profile=args.profile)
    if args.quick:
        settings.inserts, settings.updates, settings.seconds = 20_000, 5_000, 5.0
    result = ingest.run(settings)
    if result.rounds and result.rounds[0].catchup.profile:
        print("\nWhere ingest's time went while it streamed the first backlog (py-spy):\n")
        print(result.rounds[0].catchup.profile)
    return ingest.HEADING, ingest.report(result)


def _transform(args: argparse.Namespace) -> tuple[str, str]:
    settings = transform.Settings(profile=args.profile)
    if args.quick:
        settings.customers, settings.orders = 2_000, 16_000
        settings.updates, settings.deletes, settings.inserts = 4_000, 1_000, 1_000
        settings.moves = 200
        settings.big_customers, settings.big_orders = 5_000, 100_000
        settings.fresh_changes, settings.fresh_spacing_s, settings.refresh_runs = 10, 0.3, 3
    if args.profile:  # the profiles are of the throughput views: keep the rest short
        settings.big_customers, settings.big_orders, settings.fresh_changes = 5_000, 100_000, 5
    result = transform.run(settings)
    for view in result.views:
        if view.profile:
            print(f"\nWhere transform's time went while view {view.view} caught up (py-spy):\n")
            print(view.profile)
    return transform.HEADING, transform.report(result)


def _serve(args: argparse.Namespace) -> tuple[str, str]:
    settings = serve.Settings(
        profile=args.profile,
        indexes=tuple(args.indexes),
        live_baseline=args.live_baseline,
        target_cluster=args.target_cluster,
    )
    if args.quick:
        settings.rows, settings.probes, settings.warmup_s = 10_000, 30, 2.0
        settings.read_warmup_s, settings.read_seconds = 1.0, 4.0
    result = serve.run(settings)
    for fresh in result.fresh:
        if fresh.profile:
            print(
                f"\nWhere serve's materializer spent its time during the freshness probes "
                f"({serve.tx_label(fresh.tx_rows)}, py-spy):\n"
            )
            print(fresh.profile)
    for reads in result.reads:
        if reads.profile:
            print(f"\nWhere serve's time went during the point reads ({reads.mode}, py-spy):\n")
            print(reads.profile)
    return serve.HEADING, serve.report(result)


def _broker(args: argparse.Namespace) -> tuple[str, str]:
    settings = broker.Settings()
    if args.quick:
        settings.windows, settings.window_s = 2, 2.0
    return broker.HEADING, broker.report(broker.run(settings))


BENCHMARKS: dict[str, Callable[[argparse.Namespace], tuple[str, str]]] = {
    "broker": _broker,
    "ingest": _ingest,
    "transform": _transform,
    "serve": _serve,
}


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so every started server is stopped on the way out.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)}; default: all")
    parser.add_argument(
        "--output", type=Path, default=common.RESULTS, help="default: BENCHMARKS.md at the root"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small smoke run; BENCHMARKS.md is not written"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the service under test with py-spy (on PATH, in the venv or PY_SPY=path) "
        "while it works through its backlog; BENCHMARKS.md is not written",
    )
    parser.add_argument(
        "--indexes",
        type=lambda text: [c for c in text.split(",") if c],
        default=[],
        help="serve: columns of the view to index in Redis, comma-separated (default: none)",
    )
    parser.add_argument(
        "--live-baseline",
        action="store_true",
        help="serve: also tail the view topic during the probes, stamping arrivals (one more "
        "reader of that topic, which costs the embedded broker CPU)",
    )
    parser.add_argument(
        "--target-cluster",
        action="store_true",
        help="serve: put serve's target database on a PostgreSQL cluster of its own rather "
        "than in the source's cluster (as make run has it)",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    signal.signal(signal.SIGTERM, _terminate)
    for name in args.names or list(BENCHMARKS):
        heading, body = BENCHMARKS[name](args)
        print(f"\n{heading}\n\n{body}")
        if args.quick or args.profile:
            print("(--quick/--profile: BENCHMARKS.md not written)")
        else:
            common.write_section(heading, body, args.output)
            print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
