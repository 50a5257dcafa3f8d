from __future__ import annotations

from pathlib import Path

import pytest

from journeys import ContactPolicy
from streams import ConfigError
from streams._policy_file import load_policy

POLICIES = Path(__file__).resolve().parents[1] / "fixtures" / "policies"


def test_no_file_means_the_strict_defaults() -> None:
    assert load_policy(None) == ContactPolicy()
    assert load_policy(POLICIES / "strict.yaml") == ContactPolicy()


def test_the_permissive_file() -> None:
    assert load_policy(POLICIES / "permissive.yaml") == ContactPolicy.permissive()


def test_a_bad_policy_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("quiet_hours: {start: '25:00', end: '08:00'}\n")
    with pytest.raises(ConfigError, match=r"policy\.yaml: quiet_hours\.start"):
        load_policy(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_policy(tmp_path / "missing.yaml")
