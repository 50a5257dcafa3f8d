"""Load journey files: safe YAML, shape validated by pydantic, graph validated here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from journeys._errors import JourneyDefinitionError
from journeys._predicates import references
from schemas import (
    BranchStep,
    ExitStep,
    JourneyDefinition,
    SendStep,
    SplitStep,
    Step,
    UpdateStep,
    WaitForStep,
    WaitStep,
)

_PATH_ROOT = re.compile(r"^(event|trigger|vars|profile|seen)(\.[A-Za-z0-9_]+)*$")


@dataclass(frozen=True)
class Journey:
    """A validated journey version, with its steps indexed by id."""

    definition: JourneyDefinition
    source: str
    steps: Mapping[str, Step] = field(repr=False)

    # read several times per event: kept after the first read (the definition never changes)
    @cached_property
    def name(self) -> str:
        return self.definition.name

    @cached_property
    def version(self) -> int:
        return self.definition.version

    @cached_property
    def start(self) -> str:
        return self.definition.steps[0].id


def successors(step: Step) -> list[str]:
    if isinstance(step, BranchStep):
        return [branch.next for branch in step.branches] + [step.otherwise]
    if isinstance(step, SplitStep):
        return [variant.next for variant in step.variants]
    if isinstance(step, WaitForStep):
        return [step.on_event, step.on_timeout]
    if isinstance(step, ExitStep):
        return []
    return [step.next]


def is_wait(step: Step) -> bool:
    """Steps where an instance parks until a timer or an event: loops must pass one."""
    return isinstance(step, WaitStep | WaitForStep)


def load_journey_text(text: str, source: str) -> Journey:
    """Parse one journey document; `source` names it in errors (usually the file path)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JourneyDefinitionError(source, f"not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise JourneyDefinitionError(source, "a journey file must be a YAML mapping")
    try:
        definition = JourneyDefinition.model_validate(document)
    except ValidationError as exc:
        raise _shape_error(source, document, exc) from None
    return compile_journey(definition, source)


def load_journey_file(path: Path) -> Journey:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JourneyDefinitionError(str(path), f"cannot be read: {exc}") from None
    return load_journey_text(text, str(path))


def load_journeys(directory: Path) -> list[Journey]:
    """Every `*.yaml` / `*.yml` journey in a directory (not recursive), ordered by file name."""
    if not directory.is_dir():
        raise JourneyDefinitionError(str(directory), "is not a directory of journey files")
    paths = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not paths:
        raise JourneyDefinitionError(str(directory), "holds no journey files (*.yaml)")
    return _unique([load_journey_file(path) for path in paths])


def library_journeys() -> list[Journey]:
    """The built-in journey library shipped in `journeys/library/`."""
    library = resources.files("journeys") / "library"
    return load_journeys(Path(str(library)))


def _unique(journeys: Iterable[Journey]) -> list[Journey]:
    seen: dict[tuple[str, int], str] = {}
    result = []
    for journey in journeys:
        key = (journey.name, journey.version)
        if key in seen:
            raise JourneyDefinitionError(
                journey.source,
                f"journey {journey.name!r} version {journey.version} is also defined in "
                f"{seen[key]}",
            )
        seen[key] = journey.source
        result.append(journey)
    return result


def compile_journey(definition: JourneyDefinition, source: str) -> Journey:
    """Check the step graph and index it; every error names the step at fault."""
    steps: dict[str, Step] = {}
    for step in definition.steps:
        if step.id in steps:
            raise JourneyDefinitionError(source, "step id is used twice", step.id)
        steps[step.id] = step
    for step in definition.steps:
        _check_step(source, step, steps)
    _check_reachable(source, definition.steps[0].id, steps)
    _check_no_loop_without_wait(source, steps)
    _check_every_path_ends(source, steps)
    _check_events(source, definition)
    _check_migration_targets(source, definition, steps)
    return Journey(definition=definition, source=source, steps=steps)


def _check_step(source: str, step: Step, steps: Mapping[str, Step]) -> None:
    for target in successors(step):
        if target not in steps:
            raise JourneyDefinitionError(source, f"next step {target!r} does not exist", step.id)
    if isinstance(step, SendStep):
        for path in references(step.params):
            if not _PATH_ROOT.match(path):
                raise JourneyDefinitionError(
                    source,
                    f"param reference {{{{ {path} }}}} must start with event., trigger., "
                    "vars., profile. or seen.",
                    step.id,
                )


def _check_every_path_ends(source: str, steps: Mapping[str, Step]) -> None:
    """From every step an exit must be reachable: no instance can be trapped forever."""
    can_end = {step_id for step_id, step in steps.items() if isinstance(step, ExitStep)}
    changed = True
    while changed:
        changed = False
        for step_id, step in steps.items():
            if step_id not in can_end and any(t in can_end for t in successors(step)):
                can_end.add(step_id)
                changed = True
    for step_id in steps:
        if step_id not in can_end:
            raise JourneyDefinitionError(source, "no path from here reaches an exit step", step_id)


def _check_events(source: str, definition: JourneyDefinition) -> None:
    if definition.trigger.event == "timer.fired":
        raise JourneyDefinitionError(source, "timer.fired is polku's own event, not a trigger")
    for step in definition.steps:
        if isinstance(step, WaitForStep) and step.event == "timer.fired":
            raise JourneyDefinitionError(source, "wait_for cannot await timer.fired", step.id)
    for path in _update_references(definition):
        if not _PATH_ROOT.match(path):
            raise JourneyDefinitionError(source, f"bad reference {{{{ {path} }}}}")


def _update_references(definition: JourneyDefinition) -> list[str]:
    found: list[str] = []
    for step in definition.steps:
        if isinstance(step, UpdateStep):
            found += references(dict(step.set))
    return found


def _check_migration_targets(
    source: str, definition: JourneyDefinition, steps: Mapping[str, Step]
) -> None:
    if definition.migrate is None:
        return
    for old, new in definition.migrate.steps.items():
        target = steps.get(new)
        if target is None or not is_wait(target):
            raise JourneyDefinitionError(
                source, f"migrate maps {old!r} to {new!r}, which is not a wait step here"
            )


def _check_reachable(source: str, start: str, steps: Mapping[str, Step]) -> None:
    reached = {start}
    frontier = [start]
    while frontier:
        for target in successors(steps[frontier.pop()]):
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    for step_id in steps:
        if step_id not in reached:
            raise JourneyDefinitionError(source, "is unreachable from the first step", step_id)


def _check_no_loop_without_wait(source: str, steps: Mapping[str, Step]) -> None:
    """A loop must pass a wait step, or one event would run the journey forever."""
    done: set[str] = set()
    for root in steps:
        on_path: list[str] = []
        _visit(source, root, steps, done, on_path)


def _visit(
    source: str, step_id: str, steps: Mapping[str, Step], done: set[str], on_path: list[str]
) -> None:
    if step_id in on_path:
        loop = " -> ".join([*on_path[on_path.index(step_id) :], step_id])
        raise JourneyDefinitionError(source, f"loop without a wait step: {loop}", step_id)
    if step_id in done or is_wait(steps[step_id]):
        return
    on_path.append(step_id)
    for target in successors(steps[step_id]):
        _visit(source, target, steps, done, on_path)
    on_path.pop()
    done.add(step_id)


_STEP_TYPES = {"wait", "wait_for", "send", "branch", "split", "update", "exit"}


def _shape_error(source: str, document: dict[str, Any], exc: ValidationError) -> Exception:
    """Turn the first pydantic error into one naming the step by id, not by list index."""
    error = exc.errors(include_url=False, include_input=False)[0]
    location = list(error["loc"])
    step = None
    if len(location) >= 2 and location[0] == "steps" and isinstance(location[1], int):
        raw_steps = document.get("steps")
        raw = raw_steps[location[1]] if isinstance(raw_steps, list) else None
        step = raw.get("id") if isinstance(raw, dict) else None
        step = str(step) if step is not None else f"#{location[1] + 1}"
        location = location[2:]
        # the discriminator tag (e.g. "send") is pydantic's bookkeeping, not an author's field
        if location and location[0] in _STEP_TYPES:
            location = location[1:]
    where = ".".join(str(part) for part in location)
    # "Value error, " is pydantic's prefix for our own validators' messages: noise to an author
    message = error["msg"].removeprefix("Value error, ")
    problem = f"{where}: {message}" if where else message
    more = exc.error_count() - 1
    if more:
        problem += f" (and {more} more problem{'s' if more > 1 else ''})"
    return JourneyDefinitionError(source, problem, step)
