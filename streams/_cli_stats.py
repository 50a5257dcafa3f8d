"""`polku stats`: the funnel of every journey, from the metrics of one or more workers.

For people without Grafana: it reads a worker's /metrics page (prometheus_client's own text
format parser), adds up several workers when given several URLs, and prints per journey how
many customers entered, are in progress, converted, what was sent per channel, held out,
suppressed or deferred, and how instances ended. The counters count since each worker started.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from schemas import PolkuError
from streams._settings import Settings

_TIMEOUT_SECONDS = 10.0


class ScrapeError(PolkuError):
    """A worker's metrics page could not be read."""


@dataclass
class Funnel:
    """One journey's numbers; each counter is broken down by the label named in _SOURCES."""

    entered: Counter[str] = field(default_factory=Counter)  # by group: treated, holdout
    in_progress: Counter[str] = field(default_factory=Counter)  # by the step they wait at
    goals: Counter[str] = field(default_factory=Counter)  # by group
    sent: Counter[str] = field(default_factory=Counter)  # by channel
    held_out: Counter[str] = field(default_factory=Counter)  # by channel
    suppressed: Counter[str] = field(default_factory=Counter)  # by reason
    deferred: Counter[str] = field(default_factory=Counter)  # by reason
    exits: Counter[str] = field(default_factory=Counter)  # by reason: completed, exit_event


# sample name -> (Funnel field, the label that breaks it down)
_SOURCES = {
    "polku_journey_entries_total": ("entered", "group"),
    "polku_journey_instances": ("in_progress", "step"),
    "polku_journey_goals_total": ("goals", "group"),
    "polku_actions_emitted_total": ("sent", "channel"),
    "polku_actions_held_out_total": ("held_out", "channel"),
    "polku_actions_suppressed_total": ("suppressed", "reason"),
    "polku_actions_deferred_total": ("deferred", "reason"),
    "polku_journey_exits_total": ("exits", "reason"),
}
_ROWS = (
    ("entered", "entered"),
    ("in progress", "in_progress"),
    ("goals", "goals"),
    ("sent", "sent"),
    ("held out", "held_out"),
    ("suppressed", "suppressed"),
    ("deferred", "deferred"),
    ("exits", "exits"),
)


def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response:
            return str(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError) as exc:
        raise ScrapeError(f"cannot read {url}: {exc}") from None


def funnels(pages: Iterable[str]) -> dict[str, Funnel]:
    """Journey -> its funnel, summed over the given metrics pages (one per worker)."""
    result: dict[str, Funnel] = {}
    for page in pages:
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                source = _SOURCES.get(sample.name)
                journey = sample.labels.get("journey")
                if source is None or journey is None:
                    continue
                name, label = source
                tally: Counter[str] = getattr(result.setdefault(journey, Funnel()), name)
                tally[sample.labels.get(label, "")] += int(sample.value)
    return result


def render_text(result: dict[str, Funnel]) -> str:
    if not result:
        return "no journey metrics on this worker (is it a polku worker?)\n"
    lines: list[str] = []
    for journey in sorted(result):
        lines.append(journey)
        funnel = result[journey]
        for title, name in _ROWS:
            tally: Counter[str] = getattr(funnel, name)
            lines.append(f"  {title:<12}{sum(tally.values()):>8}  {_breakdown(tally)}".rstrip())
    return "\n".join(lines) + "\n"


def _breakdown(tally: Counter[str]) -> str:
    parts = [f"{key} {value}" for key, value in sorted(tally.items()) if value]
    return f"({', '.join(parts)})" if parts else ""


def render_json(result: dict[str, Funnel]) -> bytes:
    # not dataclasses.asdict: it rebuilds a Counter from its (key, count) pairs, counting them
    document: dict[str, Any] = {
        journey: {f.name: dict(sorted(getattr(funnel, f.name).items())) for f in fields(funnel)}
        for journey, funnel in sorted(result.items())
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def default_url(settings: Settings) -> str:
    if settings.metrics_port is None:
        raise ScrapeError("set POLKU_METRICS_PORT or pass --url http://host:port/metrics")
    return f"http://{_connectable(settings.metrics_host)}:{settings.metrics_port}/metrics"


def _connectable(host: str) -> str:
    # a worker listening on every interface is reached on this machine through loopback
    return "127.0.0.1" if host in {"0.0.0.0", "", "::"} else host


def cmd_stats(settings: Settings, args: argparse.Namespace) -> int:
    urls = args.url or [default_url(settings)]
    result = funnels(scrape(url) for url in urls)
    if args.journey:
        result = {name: funnel for name, funnel in result.items() if name in set(args.journey)}
    if args.json:
        sys.stdout.buffer.write(render_json(result))
    else:
        sys.stdout.write(render_text(result))
    return 0


def register(commands: Any) -> None:
    """Add `polku stats` to the `polku` parser's subparsers."""
    stats = commands.add_parser(
        "stats", help="print the funnel of every journey from workers' /metrics"
    )
    stats.add_argument(
        "--url",
        action="append",
        help="a worker's metrics URL; repeat to add up several workers "
        "(default: http://127.0.0.1:$POLKU_METRICS_PORT/metrics)",
    )
    stats.add_argument(
        "--journey", action="append", help="only this journey (repeatable)", metavar="NAME"
    )
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    stats.set_defaults(run=cmd_stats)
