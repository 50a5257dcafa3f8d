from __future__ import annotations

from schemas import PolkuError


class JourneyDefinitionError(PolkuError):
    """A journey file that cannot be loaded: names the file, the step (if known), the problem."""

    def __init__(self, source: str, problem: str, step: str | None = None) -> None:
        where = f"{source}: step {step!r}" if step else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.step = step
        self.problem = problem


class JourneyRuntimeError(PolkuError):
    """A journey instance that cannot go on (e.g. a state that names a step the journey lacks)."""
