"""Load the deployment's contact policy from a YAML (or JSON) file."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from journeys import ContactPolicy
from schemas import describe_validation_error
from streams._errors import ConfigError


def load_policy(path: Path | None) -> ContactPolicy:
    """The policy in `path`; without a file, the strict defaults (explicit marketing consent,
    quiet hours 21:00-08:00, 1 SMS a day, 3 marketing messages a week)."""
    if path is None:
        return ContactPolicy()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"contact policy {path}: cannot be read: {exc}") from None
    try:
        return ContactPolicy.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"contact policy {path}: {describe_validation_error(exc)}") from None
