"""`polku bench`: the benchmark suite (see README, Performance)."""

from __future__ import annotations

import argparse
import signal
from typing import TYPE_CHECKING, Any

from streams._settings import Settings

if TYPE_CHECKING:
    from streams._bench import Scale


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from streams._bench import SCENARIOS, run_bench

    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        print(f"error: unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        return 2
    if args.latency_rate < 0:
        print(
            f"error: --latency-rate must be 0 (half of B1's rate) or more, not {args.latency_rate}"
        )
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    run_bench(settings, scale_from_args(args), names)
    return 0


def scale_from_args(args: argparse.Namespace) -> Scale:
    """The scale flags of `polku bench`, as the benchmark takes them."""
    from streams._bench import Scale

    return Scale(
        events=args.events,
        customers=args.customers,
        timers=args.timers,
        burst=args.burst,
        burst_load=args.burst_load,
        latency_seconds=args.latency_seconds,
        latency_rate=args.latency_rate,
        recovery_customers=args.recovery_customers,
        timeout_seconds=args.timeout,
    )


def _stop_on_sigterm(signum: int, _: object) -> None:
    # unwinds through every `finally`: workers stopped, the local broker shut down
    raise SystemExit(128 + signum)


def register(commands: Any) -> None:
    """Add `polku bench` to the `polku` parser's subparsers."""
    bench = commands.add_parser(
        "bench", help="benchmark polku against the raw Kafka client on a local (or given) broker"
    )
    defaults = _scale_defaults()
    bench.add_argument("--scenarios", default="b1,b2,b3,b4,b5", help="comma-separated subset")
    bench.add_argument("--events", type=int, default=defaults["events"], help="B1/B5 events")
    bench.add_argument("--customers", type=int, default=defaults["customers"], help="B1 customers")
    bench.add_argument("--timers", type=int, default=defaults["timers"], help="B3 pending timers")
    bench.add_argument("--burst", type=int, default=defaults["burst"], help="B3 timers due at once")
    bench.add_argument(
        "--burst-load",
        type=float,
        default=defaults["burst_load"],
        help="B3: signups/s produced while the burst falls due (0: an idle worker)",
    )
    bench.add_argument(
        "--latency-seconds", type=float, default=defaults["latency_seconds"], help="B2 duration"
    )
    bench.add_argument(
        "--latency-rate",
        type=float,
        default=defaults["latency_rate"],
        help="B2 signups/s (default 0: half of the run's B1 rate)",
    )
    bench.add_argument(
        "--recovery-customers",
        type=int,
        default=defaults["recovery_customers"],
        help="B4 customers with state",
    )
    bench.add_argument(
        "--timeout", type=float, default=defaults["timeout_seconds"], help="per phase, seconds"
    )
    bench.set_defaults(run=cmd_bench)


def _scale_defaults() -> dict[str, Any]:
    from dataclasses import asdict

    from streams._bench import Scale

    return asdict(Scale())
