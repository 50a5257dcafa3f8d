"""A journey as a diagram: Mermaid (renders on GitHub and in most docs) or Graphviz DOT."""

from __future__ import annotations

import orjson

from journeys._loader import Journey
from schemas import (
    AllOf,
    AnyOf,
    BranchStep,
    Comparison,
    ExitStep,
    NotOf,
    Predicate,
    SendStep,
    SplitStep,
    Step,
    UpdateStep,
    WaitForStep,
    WaitStep,
)


def _label(step: Step) -> str:
    if isinstance(step, WaitStep):
        if step.duration is not None:
            what = f"wait {_duration(step)}"
        elif step.until_time is not None:
            what = f"wait until {step.until_time} local time"
        else:
            assert step.until is not None
            what = f"wait until {step.until.path} {_signed(step)}"
    elif isinstance(step, WaitForStep):
        what = f"wait for {step.event}<br/>up to {_iso(step.timeout.total_seconds())}"
    elif isinstance(step, SendStep):
        what = f"send {step.channel}<br/>{step.template}"
    elif isinstance(step, BranchStep):
        what = "branch"
    elif isinstance(step, SplitStep):
        what = f"split {step.experiment or ''}".rstrip()
    elif isinstance(step, UpdateStep):
        what = "update " + ", ".join([*step.set, *(f"+{t}" for t in step.add_tags)])
    else:
        what = "exit"
    return f"{step.id}<br/>{what}".replace('"', "'")


def _duration(step: WaitStep) -> str:
    assert step.duration is not None
    return _iso(step.duration.total_seconds())


def _signed(step: WaitStep) -> str:
    assert step.until is not None
    seconds = step.until.offset.total_seconds()
    return ("-" if seconds < 0 else "+") + _iso(abs(seconds))


def _iso(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "") if seconds else "PT0S"


def _edges(step: Step) -> list[tuple[str, str]]:
    """(label, target) pairs leaving a step."""
    if isinstance(step, BranchStep):
        branches = [(describe(b.when), b.next) for b in step.branches]
        return [*branches, ("otherwise", step.otherwise)]
    if isinstance(step, SplitStep):
        return [(f"{v.name} {v.percent:g}%", v.next) for v in step.variants]
    if isinstance(step, WaitForStep):
        return [(step.event, step.on_event), ("timeout", step.on_timeout)]
    if isinstance(step, ExitStep):
        return []
    return [("", step.next)]


def describe(predicate: Predicate) -> str:
    """A predicate as short text: `trigger.channel eq store`, `all(...)`."""
    if isinstance(predicate, AllOf):
        return "all(" + ", ".join(describe(p) for p in predicate.all) + ")"
    if isinstance(predicate, AnyOf):
        return "any(" + ", ".join(describe(p) for p in predicate.any) + ")"
    if isinstance(predicate, NotOf):
        return f"not {describe(predicate.not_)}"
    assert isinstance(predicate, Comparison)
    if predicate.op == "exists":
        return (
            f"{predicate.path} exists"
            if predicate.value in (None, True)
            else (f"no {predicate.path}")
        )
    return f"{predicate.path} {predicate.op} {orjson.dumps(predicate.value).decode()}"


def _shape(step: Step, label: str) -> str:
    if isinstance(step, BranchStep | SplitStep):
        return f'{step.id}{{"{label}"}}'
    if isinstance(step, ExitStep):
        return f'{step.id}(["{label}"])'
    if isinstance(step, WaitStep | WaitForStep):
        return f'{step.id}[/"{label}"/]'
    return f'{step.id}["{label}"]'


def to_mermaid(journey: Journey) -> str:
    definition = journey.definition
    lines = [
        "flowchart TD",
        f'  entry(("{definition.trigger.event}")) --> {journey.start}',
    ]
    for step in journey.steps.values():
        lines.append(f"  {_shape(step, _label(step))}")
    for step in journey.steps.values():
        for label, target in _edges(step):
            text = label.replace('"', "'")
            arrow = f'-->|"{text}"|' if label else "-->"
            lines.append(f"  {step.id} {arrow} {target}")
    exits = [e.event for e in definition.exit_on]
    if definition.goal:
        exits.append(f"goal: {definition.goal.event}")
    if exits:
        lines.append(f'  any_step[["any step: {" / ".join(exits)} ends it"]]')
    return "\n".join(lines) + "\n"


def to_dot(journey: Journey) -> str:
    lines = [f'digraph "{journey.name}_v{journey.version}" {{', "  rankdir=TB;"]
    lines.append(f'  entry [shape=circle, label="{journey.definition.trigger.event}"];')
    lines.append(f"  entry -> {journey.start};")
    for step in journey.steps.values():
        shape = "diamond" if isinstance(step, BranchStep | SplitStep) else "box"
        label = _label(step).replace("<br/>", "\\n")
        lines.append(f'  {step.id} [shape={shape}, label="{label}"];')
        for edge, target in _edges(step):
            text = edge.replace('"', "'")
            lines.append(f'  {step.id} -> {target} [label="{text}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
