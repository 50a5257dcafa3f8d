"""`polku`: demo, worker, produce, validate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from schemas import PolkuError
from streams._cli_bench import register as register_bench_command
from streams._cli_channels import register as register_channel_commands
from streams._cli_journeys import cmd_validate, worker_engine
from streams._cli_journeys import register as register_journey_commands
from streams._cli_stats import register as register_stats_command
from streams._settings import Settings


def cmd_worker(settings: Settings, _: argparse.Namespace) -> int:
    import faust
    from prometheus_client import start_http_server

    from streams._gc import tune_garbage_collector
    from streams._metrics import WorkerMetrics
    from streams._topics import ensure_topics
    from streams._worker import build_app

    engine = worker_engine(settings)
    ensure_topics(settings)
    metrics = WorkerMetrics()
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, settings.metrics_host, metrics.registry)
    app, _processor = build_app(settings, engine, metrics)
    tune_garbage_collector(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from streams._producer import produce_lines

    source = sys.stdin.buffer if args.file == "-" else Path(args.file).open("rb")  # noqa: SIM115
    with source:
        report = produce_lines(settings, source)
    print(f"sent {report.sent}, rejected {len(report.rejected)}")
    for line, reason in report.rejected:
        print(f"  line {line}: {reason}", file=sys.stderr)
    for failure in report.failed:
        print(f"  not delivered: {failure}", file=sys.stderr)
    return 1 if report.rejected or report.failed else 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from streams._demo import run_demo

    return run_demo(settings, timeout_seconds=args.timeout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polku", description="Kafka-native customer-journey orchestrator"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="start a local broker and a worker, play a multi-customer scenario"
    )
    demo.add_argument("--timeout", type=float, default=90.0, help="give up after this many seconds")
    demo.set_defaults(run=cmd_demo)
    commands.add_parser(
        "worker", help="run a journey worker against POLKU_KAFKA_BOOTSTRAP"
    ).set_defaults(run=cmd_worker)
    produce = commands.add_parser("produce", help="validate and produce JSON-lines touchpoints")
    produce.add_argument("file", help="a .jsonl file, or - for standard input")
    produce.set_defaults(run=cmd_produce)
    validate = commands.add_parser("validate", help="check journey files (= journeys validate)")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(run=cmd_validate)
    register_journey_commands(commands)
    register_channel_commands(commands)
    register_stats_command(commands)
    register_bench_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
        return int(args.run(settings, args))
    except ValidationError as exc:
        print(f"error: bad POLKU_* setting: {exc}", file=sys.stderr)
        return 2
    except PolkuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
