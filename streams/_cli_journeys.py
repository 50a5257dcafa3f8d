"""`polku journeys ...` and `polku simulate`: the journey author's tools."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from journeys import (
    CustomerState,
    Engine,
    Journey,
    decode_state,
    library_journeys,
    load_journey_file,
    load_journeys,
    simulate,
    to_dot,
    to_mermaid,
)
from schemas import InvalidEventError, PolkuError, Touchpoint, encode, touchpoint_from_dict
from streams._errors import ConfigError
from streams._policy_file import load_policy
from streams._settings import Settings


def configured_journeys(settings: Settings, directory: str | None = None) -> list[Journey]:
    """`directory` if given, else POLKU_JOURNEYS_DIR, else the built-in library."""
    if directory:
        return load_journeys(Path(directory))
    if settings.journeys_dir is not None:
        return load_journeys(settings.journeys_dir)
    return library_journeys()


def worker_engine(settings: Settings) -> Engine:
    """The engine `polku worker` runs: the configured journeys, time zone and contact policy."""
    return Engine(
        configured_journeys(settings),
        default_timezone=settings.default_timezone,
        policy=load_policy(settings.contact_policy_file),
    )


def _named(journeys: list[Journey], name: str, version: int | None) -> Journey:
    matching = [j for j in journeys if j.name == name and version in (None, j.version)]
    if not matching:
        known = ", ".join(sorted({j.name for j in journeys}))
        raise ConfigError(f"no journey {name!r}{f' v{version}' if version else ''}; known: {known}")
    return max(matching, key=lambda j: j.version)


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    for journey in sorted(
        configured_journeys(settings, args.dir), key=lambda j: (j.name, j.version)
    ):
        d = journey.definition
        print(
            f"{journey.name:<20} v{journey.version:<3} {d.trigger.event:<22} {d.owner:<14} "
            f"{len(journey.steps)} steps"
        )
    return 0


def cmd_validate(_: Settings, args: argparse.Namespace) -> int:
    failed = 0
    for name in args.files:
        try:
            journey = load_journey_file(Path(name))
        except PolkuError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"ok: {name}: {journey.name} v{journey.version}, {len(journey.steps)} steps")
    return 1 if failed else 0


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    journey = _named(configured_journeys(settings, args.dir), args.name, args.version)
    document = journey.definition.model_dump(mode="json", by_alias=True, exclude_none=True)
    print(f"# {journey.source}")
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_graph(settings: Settings, args: argparse.Namespace) -> int:
    journey = _named(configured_journeys(settings, args.dir), args.name, args.version)
    if args.format == "mermaid":
        text = to_mermaid(journey)
        if args.output:
            Path(args.output).write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    dot = shutil.which("dot")
    if dot is None:
        raise ConfigError(f"--format {args.format} needs Graphviz: apt-get install graphviz")
    if not args.output:
        raise ConfigError(f"--format {args.format} needs --output FILE")
    subprocess.run(
        [dot, f"-T{args.format}", "-o", args.output], input=to_dot(journey).encode(), check=True
    )
    print(f"wrote {args.output}")
    return 0


def read_events(path: Path) -> list[Touchpoint]:
    """Validated events from a JSON-lines file; a bad line is an error naming the line."""
    events = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(touchpoint_from_dict(orjson.loads(line), line))
        except (orjson.JSONDecodeError, InvalidEventError) as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
    return events


def _read_states(path: Path) -> dict[str, CustomerState]:
    states = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            state = decode_state(line)
            states[state.customer_id] = state
    return states


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    journeys = configured_journeys(settings, args.dir)
    if args.journey:
        journeys = [j for j in journeys if j.name in set(args.journey)]
        if not journeys:
            raise ConfigError(f"none of {args.journey} is a loaded journey")
    engine = Engine(journeys, default_timezone=args.timezone)
    states = _read_states(Path(args.state)) if args.state else {}
    if states:
        _print_migrations(engine, states, args.at)
    result = simulate(
        engine,
        read_events(Path(args.events)) if args.events else [],
        until=args.until,
        states=states,
    )
    sys.stdout.write(result.render_timeline())
    if args.actions_out:
        Path(args.actions_out).write_bytes(b"".join(encode(a) + b"\n" for a in result.actions))
    print(f"# {len(result.actions)} actions", file=sys.stderr)
    return 0


def _print_migrations(engine: Engine, states: dict[str, CustomerState], at: datetime) -> None:
    for customer in sorted(states):
        outcome = engine.migrate_state(states[customer], at)
        for t in outcome.transitions:
            print(f"# {customer}: {t.journey} -> v{t.version} at {t.step_id} ({t.reason})")


def _datetime(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. 2026-01-01T00:00Z")
    return moment


def register(commands: Any) -> None:
    group = commands.add_parser("journeys", help="list, validate, show and draw journeys")
    sub = group.add_subparsers(dest="journeys_command", required=True)
    listing = sub.add_parser("list", help="the loaded journeys")
    listing.set_defaults(run=cmd_list)
    validate = sub.add_parser("validate", help="check journey files")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(run=cmd_validate)
    show = sub.add_parser("show", help="a journey as validated data")
    show.set_defaults(run=cmd_show)
    graph = sub.add_parser("graph", help="a journey as a Mermaid diagram (or SVG/PNG by Graphviz)")
    graph.add_argument("--format", choices=["mermaid", "svg", "png"], default="mermaid")
    graph.add_argument("--output", "-o", help="write to this file instead of standard output")
    graph.set_defaults(run=cmd_graph)
    for parser in (listing, show, graph):
        parser.add_argument(
            "--dir", help="journeys directory (default: POLKU_JOURNEYS_DIR or the library)"
        )
    for parser in (show, graph):
        parser.add_argument("name")
        parser.add_argument("--version", type=int, help="default: the newest")

    sim = commands.add_parser("simulate", help="replay recorded events on a virtual clock")
    sim.add_argument("--events", help="touchpoints as JSON lines (timer.fired lines are skipped)")
    sim.add_argument("--journey", action="append", help="only this journey (repeatable)")
    sim.add_argument(
        "--dir", help="journeys directory (default: POLKU_JOURNEYS_DIR or the library)"
    )
    sim.add_argument("--actions-out", help="write the emitted actions here as JSON lines")
    sim.add_argument("--until", type=_datetime, help="fire pending timers only up to this time")
    sim.add_argument("--timezone", default="UTC", help="customers' default time zone")
    sim.add_argument("--state", help="recorded customer states (JSON lines): show migrations")
    sim.add_argument(
        "--at",
        type=_datetime,
        default=datetime(1970, 1, 1, tzinfo=UTC),
        help="the time stamped on migration previews",
    )
    sim.set_defaults(run=cmd_simulate)
