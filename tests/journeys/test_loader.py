"""Journey files: safe YAML, validated shape and graph, errors that name the file and the step."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from journeys import (
    Journey,
    JourneyDefinitionError,
    library_journeys,
    load_journey_file,
    load_journey_text,
    load_journeys,
)
from schemas import BranchStep, SendStep, WaitStep

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "journeys" / "library"
FIXTURES = REPO / "tests" / "fixtures" / "journeys"


def valid_journey() -> dict[str, Any]:
    """A small valid journey: wait, branch, send, exit."""
    return {
        "name": "welcome",
        "version": 1,
        "description": "Welcome new newsletter subscribers.",
        "owner": "crm-team",
        "trigger": {"event": "newsletter.subscribed"},
        "exit_on": [{"event": "consent.changed"}],
        "steps": [
            {"id": "pause", "type": "wait", "duration": "PT10M", "next": "has_email"},
            {
                "id": "has_email",
                "type": "branch",
                "branches": [
                    {
                        "when": {"path": "trigger.customer.email", "op": "exists"},
                        "next": "welcome_mail",
                    }
                ],
                "otherwise": "done",
            },
            {
                "id": "welcome_mail",
                "type": "send",
                "channel": "email",
                "template": "welcome",
                "params": {"list": "{{ trigger.payload.list_id }}"},
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ],
    }


def step(document: dict[str, Any], step_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in document["steps"] if s["id"] == step_id)
    return found


def write(directory: Path, file_name: str, document: Any) -> Path:
    path = directory / file_name
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def rejected(tmp_path: Path, document: Any, file_name: str = "journey.yaml") -> str:
    """Load `document` from a file and return the error message, which must name the file."""
    path = write(tmp_path, file_name, document)
    with pytest.raises(JourneyDefinitionError) as caught:
        load_journey_file(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert caught.value.source == str(path)
    return message


def test_a_valid_journey_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "welcome.yaml", valid_journey())
    journey = load_journey_file(path)
    assert isinstance(journey, Journey)
    assert (journey.name, journey.version, journey.start) == ("welcome", 1, "pause")
    assert journey.source == str(path)
    assert list(journey.steps) == ["pause", "has_email", "welcome_mail", "done"]
    wait = journey.steps["pause"]
    assert isinstance(wait, WaitStep)
    assert wait.duration == timedelta(minutes=10)


def test_load_journey_text_names_the_given_source() -> None:
    with pytest.raises(JourneyDefinitionError, match=r"^inline://x: "):
        load_journey_text("name: [", "inline://x")


# -- step-level problems name the step -------------------------------------------------------


def test_an_unknown_key_in_a_step_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    step(document, "welcome_mail")["subject"] = "Hello"
    message = rejected(tmp_path, document)
    assert "step 'welcome_mail'" in message
    assert "subject" in message
    assert "Extra inputs are not permitted" in message


def test_an_unknown_key_at_the_top_is_rejected(tmp_path: Path) -> None:
    document = valid_journey() | {"audience": "everyone"}
    message = rejected(tmp_path, document)
    assert "audience" in message
    assert "Extra inputs are not permitted" in message


def test_a_step_without_an_id_is_named_by_its_position(tmp_path: Path) -> None:
    document = valid_journey()
    del document["steps"][1]["id"]
    message = rejected(tmp_path, document)
    assert "step '#2'" in message
    assert "id" in message


def test_a_step_of_unknown_type_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    step(document, "pause")["type"] = "sleep"
    message = rejected(tmp_path, document)
    assert "step 'pause'" in message
    assert "sleep" in message


def test_a_dangling_next_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    step(document, "welcome_mail")["next"] = "nowhere"
    message = rejected(tmp_path, document)
    assert "step 'welcome_mail'" in message
    assert "'nowhere' does not exist" in message


def test_a_dangling_branch_target_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    step(document, "has_email")["branches"][0]["next"] = "sms_mail"
    message = rejected(tmp_path, document)
    assert "step 'has_email'" in message
    assert "'sms_mail' does not exist" in message


def test_a_dangling_otherwise_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    step(document, "has_email")["otherwise"] = "the_end"
    message = rejected(tmp_path, document)
    assert "step 'has_email'" in message
    assert "'the_end' does not exist" in message


def test_an_unreachable_step_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    document["steps"].insert(
        3,
        {
            "id": "orphan",
            "type": "send",
            "channel": "sms",
            "template": "welcome_sms",
            "next": "done",
        },
    )
    message = rejected(tmp_path, document)
    assert "step 'orphan'" in message
    assert "unreachable" in message


def test_a_duplicate_step_id_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    document["steps"].insert(3, {"id": "welcome_mail", "type": "exit"})
    message = rejected(tmp_path, document)
    assert "step 'welcome_mail'" in message
    assert "used twice" in message


def test_a_loop_without_a_wait_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    # has_email -> welcome_mail -> has_email: one event would send mail forever
    step(document, "welcome_mail")["next"] = "has_email"
    message = rejected(tmp_path, document)
    assert "loop without a wait" in message
    assert "has_email" in message
    assert "welcome_mail" in message
    assert "step '" in message


def test_a_self_loop_without_a_wait_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    step(document, "has_email")["otherwise"] = "has_email"
    message = rejected(tmp_path, document)
    assert "step 'has_email'" in message
    assert "loop without a wait step: has_email -> has_email" in message


def test_a_loop_through_a_wait_is_allowed(tmp_path: Path) -> None:
    document = valid_journey()
    # a weekly reminder: send, wait, send again; the wait step breaks the loop
    step(document, "welcome_mail")["next"] = "pause"
    path = write(tmp_path, "weekly.yaml", document)
    journey = load_journey_file(path)
    mail = journey.steps["welcome_mail"]
    assert isinstance(mail, SendStep)
    assert mail.next == "pause"


BAD_DURATIONS: list[Any] = ["1 hour", "P1M", "P1Y", "P1W", "PT0S", "P0D", "PT0H0M", "PT", "P"]
BAD_DURATIONS += ["-PT1H", "PT-1H", "1h", "PT1H ", 3600, None]


@pytest.mark.parametrize("duration", BAD_DURATIONS)
def test_a_bad_duration_is_rejected(tmp_path: Path, duration: Any) -> None:
    document = valid_journey()
    step(document, "pause")["duration"] = duration
    message = rejected(tmp_path, document)
    assert "step 'pause'" in message
    assert "duration" in message


@pytest.mark.parametrize("duration", ["P99999999999999D", "PT99999999999999999999H"])
def test_an_absurdly_long_duration_is_a_definition_error(tmp_path: Path, duration: str) -> None:
    document = valid_journey()
    step(document, "pause")["duration"] = duration
    message = rejected(tmp_path, document)
    assert "step 'pause'" in message
    assert "duration" in message


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        ("PT1H", timedelta(hours=1)),
        ("PT30M", timedelta(minutes=30)),
        ("PT1.5S", timedelta(seconds=1.5)),
        ("P2D", timedelta(days=2)),
        ("P2DT12H", timedelta(days=2, hours=12)),
        ("PT24H", timedelta(days=1)),
        ("P1DT1H1M1S", timedelta(days=1, hours=1, minutes=1, seconds=1)),
    ],
)
def test_good_durations_parse(tmp_path: Path, duration: str, expected: timedelta) -> None:
    document = valid_journey()
    step(document, "pause")["duration"] = duration
    wait = load_journey_file(write(tmp_path, "ok.yaml", document)).steps["pause"]
    assert isinstance(wait, WaitStep)
    assert wait.duration == expected


def test_an_unknown_channel_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    step(document, "welcome_mail")["channel"] = "fax"
    message = rejected(tmp_path, document)
    assert "step 'welcome_mail'" in message
    assert "channel" in message


def test_a_param_reference_outside_the_context_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    step(document, "welcome_mail")["params"] = {"who": "{{ customer.email }}"}
    message = rejected(tmp_path, document)
    assert "step 'welcome_mail'" in message
    assert "customer.email" in message


def test_a_bad_predicate_in_a_branch_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    step(document, "has_email")["branches"][0]["when"]["op"] = "matches"
    message = rejected(tmp_path, document)
    assert "step 'has_email'" in message
    assert "op" in message


# -- journey-level problems ------------------------------------------------------------------


def test_an_unknown_trigger_event_type_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    document["trigger"]["event"] = "newsletter.subscribe"
    message = rejected(tmp_path, document)
    assert "trigger.event" in message
    assert "unknown event type 'newsletter.subscribe'" in message


def test_an_unknown_exit_event_type_is_rejected(tmp_path: Path) -> None:
    document = valid_journey()
    document["exit_on"][0]["event"] = "order.cancelled"
    message = rejected(tmp_path, document)
    assert "exit_on" in message
    assert "order.cancelled" in message


@pytest.mark.parametrize("field", ["name", "version", "description", "owner", "trigger", "steps"])
def test_a_missing_required_field_is_rejected(tmp_path: Path, field: str) -> None:
    document = valid_journey()
    del document[field]
    message = rejected(tmp_path, document)
    assert field in message


def test_no_steps_is_rejected(tmp_path: Path) -> None:
    message = rejected(tmp_path, valid_journey() | {"steps": []})
    assert "steps" in message


def test_the_error_counts_further_problems(tmp_path: Path) -> None:
    document = valid_journey() | {"version": 0, "owner": ""}
    message = rejected(tmp_path, document)
    assert "(and 1 more problem)" in message


@pytest.mark.parametrize(
    "text",
    ["- a list\n- of steps\n", "just text\n", "42\n", "", "# only a comment\n", "null\n"],
)
def test_a_document_that_is_not_a_mapping_is_rejected(tmp_path: Path, text: str) -> None:
    message = rejected(tmp_path, text)
    assert "must be a YAML mapping" in message


@pytest.mark.parametrize(
    "text",
    ["name: [unclosed\n", "name: a\n  bad: indent\n", "a: 1\na: [\n", "\tname: tab\n"],
)
def test_invalid_yaml_is_rejected(tmp_path: Path, text: str) -> None:
    message = rejected(tmp_path, text)
    assert "not valid YAML" in message


def test_python_tags_are_not_constructed(tmp_path: Path) -> None:
    text = yaml.safe_dump(valid_journey(), sort_keys=False).replace(
        "owner: crm-team", "owner: !!python/object/apply:os.system ['echo pwned']"
    )
    assert "!!python/object" in text
    message = rejected(tmp_path, text)
    assert "not valid YAML" in message


def test_a_python_object_tag_is_rejected(tmp_path: Path) -> None:
    text = "!!python/object:collections.OrderedDict\nname: welcome\n"
    message = rejected(tmp_path, text)
    assert "not valid YAML" in message


def test_a_file_that_is_not_utf8_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: Hyvää päivää\n".encode("latin-1"))
    with pytest.raises(JourneyDefinitionError, match="cannot be read"):
        load_journey_file(path)


def test_a_missing_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(JourneyDefinitionError, match="cannot be read"):
        load_journey_file(tmp_path / "absent.yaml")


# -- directories -----------------------------------------------------------------------------


def test_load_journeys_reads_yaml_and_yml_in_name_order(tmp_path: Path) -> None:
    second = copy.deepcopy(valid_journey()) | {"name": "b_journey"}
    write(tmp_path, "b.yml", second)
    write(tmp_path, "a.yaml", valid_journey())
    write(tmp_path, "notes.txt", "not a journey")
    journeys = load_journeys(tmp_path)
    assert [journey.name for journey in journeys] == ["welcome", "b_journey"]


def test_two_versions_of_one_journey_may_coexist(tmp_path: Path) -> None:
    write(tmp_path, "welcome_v1.yaml", valid_journey())
    write(tmp_path, "welcome_v2.yaml", valid_journey() | {"version": 2})
    assert [j.version for j in load_journeys(tmp_path)] == [1, 2]


def test_the_same_name_and_version_twice_is_rejected_naming_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "welcome.yaml", valid_journey())
    second = write(tmp_path, "welcome_copy.yaml", valid_journey())
    with pytest.raises(JourneyDefinitionError) as caught:
        load_journeys(tmp_path)
    message = str(caught.value)
    assert str(first) in message
    assert str(second) in message
    assert "'welcome' version 1" in message


def test_one_bad_file_fails_the_whole_directory(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", valid_journey())
    bad = write(tmp_path, "b.yaml", "name: [\n")
    with pytest.raises(JourneyDefinitionError, match=str(bad)):
        load_journeys(tmp_path)


def test_an_empty_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(JourneyDefinitionError, match="no journey files"):
        load_journeys(tmp_path)


def test_a_missing_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(JourneyDefinitionError, match="not a directory"):
        load_journeys(tmp_path / "absent")


# -- the shipped journeys --------------------------------------------------------------------


def test_the_library_loads() -> None:
    journeys = library_journeys()
    by_version = {(journey.name, journey.version): journey for journey in journeys}
    assert ("abandoned_cart", 2) in by_version
    cart = by_version[("abandoned_cart", 1)]
    assert cart.start == "wait_before_reminder"
    assert cart.definition.trigger.event == "cart.abandoned"
    assert [exit_on.event for exit_on in cart.definition.exit_on] == ["order.placed"]
    assert isinstance(cart.steps["has_phone"], BranchStep)
    assert Path(cart.source).parent == LIBRARY


def test_every_library_file_loads_on_its_own() -> None:
    paths = sorted(LIBRARY.glob("*.y*ml"))
    assert paths
    for path in paths:
        assert load_journey_file(path).source == str(path)
    assert len(library_journeys()) == len(paths)


def test_the_fast_test_fixture_loads_and_mirrors_the_library_cart() -> None:
    fast = load_journeys(FIXTURES)
    assert [journey.name for journey in fast] == ["cart_fast"]
    library_cart = next(j for j in library_journeys() if j.name == "abandoned_cart")
    assert list(fast[0].steps) == list(library_cart.steps)


def test_a_wait_longer_than_ten_years_is_rejected_naming_the_step() -> None:
    text = (
        (LIBRARY / "abandoned_cart.yaml").read_text().replace("duration: PT1H", "duration: P3651D")
    )
    with pytest.raises(JourneyDefinitionError, match=r"wait_before_reminder.*at most 3650 days"):
        load_journey_text(text, "long.yaml")
