"""`polku journeys ...` and `polku simulate`, run through the real CLI entry point."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from journeys import CustomerState, Engine, encode_state, library_journeys, to_dot, to_mermaid
from schemas import CartAbandoned, CartPayload, CustomerRef, LineItem, SourceChannel
from streams.cli import main

GOLDEN = Path(__file__).resolve().parents[1] / "journeys" / "golden"


def test_list_names_every_library_journey(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journeys", "list"]) == 0
    out = capsys.readouterr().out
    for journey in library_journeys():
        assert re.search(rf"^{journey.name}\s+v{journey.version}\s", out, re.MULTILINE)


def test_validate_reports_the_file_the_step_and_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = Path(library_journeys()[0].source)
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("next: email_reminder", "next: nowhere"))
    assert main(["journeys", "validate", str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert f"ok: {good}" in captured.out
    assert f"{bad}: step 'wait_before_reminder': next step 'nowhere' does not exist" in (
        captured.err
    )


def test_show_prints_the_validated_journey(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journeys", "show", "abandoned_cart", "--version", "1"]) == 0
    out = capsys.readouterr().out
    assert '"name": "abandoned_cart"' in out
    assert '"duration": "PT1H"' in out


def test_an_unknown_journey_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journeys", "graph", "no_such_journey"]) == 1
    assert "no journey 'no_such_journey'; known: abandoned_cart" in capsys.readouterr().err


@pytest.mark.parametrize("journey", library_journeys(), ids=lambda j: f"{j.name}-v{j.version}")
def test_every_step_and_edge_is_in_the_diagrams(journey: object) -> None:
    from journeys import Journey, successors

    assert isinstance(journey, Journey)
    mermaid, dot = to_mermaid(journey), to_dot(journey)
    assert mermaid.startswith("flowchart TD\n")
    for step in journey.steps.values():
        assert re.search(rf"^  {step.id}[\[\{{\(]", mermaid, re.MULTILINE), step.id
        for target in successors(step):
            assert re.search(rf"^  {step.id} -->(\|[^|]*\|)? {target}$", mermaid, re.MULTILINE)
            assert f"  {step.id} -> {target} [" in dot


def test_graph_writes_mermaid_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "cart.mmd"
    assert main(["journeys", "graph", "post_purchase", "--output", str(out)]) == 0
    assert "where_bought -->|\"trigger.channel eq 'store'\"| after_store_purchase" in (
        out.read_text()
    )


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
def test_graph_renders_svg_with_graphviz(tmp_path: Path) -> None:
    out = tmp_path / "cart.svg"
    assert main(["journeys", "graph", "abandoned_cart", "--format", "svg", "-o", str(out)]) == 0
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") or "<svg" in svg
    assert "email_reminder" in svg


def test_simulate_prints_the_golden_timeline_and_writes_actions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    actions = tmp_path / "actions.jsonl"
    argv = [
        "simulate",
        "--events",
        str(GOLDEN / "returns.events.jsonl"),
        "--journey",
        "returns",
        "--timezone",
        "Europe/Helsinki",
        "--actions-out",
        str(actions),
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out == (GOLDEN / "returns.timeline.txt").read_text()
    assert actions.read_text() == (GOLDEN / "returns.actions.jsonl").read_text()


def test_simulate_twice_is_byte_identical(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--events", str(GOLDEN / "library.events.jsonl")]
    main(argv)
    first = capsys.readouterr().out
    main(argv)
    assert capsys.readouterr().out == first


def test_simulate_shows_what_a_migration_does_to_recorded_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = [j for j in library_journeys() if (j.name, j.version) == ("abandoned_cart", 1)]
    cart = CartAbandoned(
        event_id="e1",
        occurred_at=datetime(2026, 3, 2, 10, tzinfo=UTC),
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id="aino"),
        payload=CartPayload(cart_id="k1", items=[LineItem(sku="s", name="Shoe")]),
    )
    waiting = Engine(v1).advance(CustomerState(customer_id="aino"), cart, cart.occurred_at)
    states = tmp_path / "states.jsonl"
    states.write_bytes(encode_state(waiting.state) + b"\n")

    argv = [
        "simulate",
        "--state",
        str(states),
        "--journey",
        "abandoned_cart",
        "--until",
        "2026-03-02T12:00:00+00:00",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "# aino: abandoned_cart -> v2 at wait_before_reminder (from wait_before_reminder)" in out
    assert "abandoned_cart v2  sent email cart_reminder" in out


def test_a_bad_event_line_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text((GOLDEN / "returns.events.jsonl").read_text() + '{"type": "nope"}\n')
    assert main(["simulate", "--events", str(events)]) == 1
    assert f"{events}:2:" in capsys.readouterr().err
