"""The collector's and senders' settings: safe defaults, secrets kept secret, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from streams import Settings


def test_the_defaults_are_safe() -> None:
    settings = Settings()
    assert settings.collector_host == "127.0.0.1"
    assert settings.collector_keys() == []  # no key: the collector refuses to start
    assert settings.smtp_security == "starttls"
    assert settings.sender_max_attempts == 5


def test_api_keys_are_secret_and_split_for_rotation() -> None:
    # keys no field name or value contains ("old" is in "gc_thresholds")
    settings = Settings(collector_api_keys=SecretStr(" key-old-7f3a , key-new-91c2 ,"))
    assert settings.collector_keys() == [b"key-old-7f3a", b"key-new-91c2"]
    assert "key-old-7f3a" not in repr(settings)
    assert "key-new-91c2" not in str(settings.model_dump())


def test_the_smtp_password_and_webhook_token_are_secret() -> None:
    settings = Settings(smtp_password=SecretStr("pw-1"), webhook_token=SecretStr("tok-1"))
    assert "pw-1" not in repr(settings)
    assert "tok-1" not in repr(settings)


def test_sender_group_and_store_derive_from_the_app_and_channel(tmp_path: Path) -> None:
    settings = Settings(app_id="shop", data_dir=tmp_path)
    assert settings.sender_group("sms") == "shop.sender.sms"
    assert settings.sender_store_path("sms") == tmp_path / "senders" / "shop.sender.sms.sqlite3"
    pinned = Settings(sender_group_id="g", sender_state_dir=tmp_path / "s")
    assert pinned.sender_store_path("email") == tmp_path / "s" / "g.sqlite3"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("smtp_from", "no address here", "must hold an email address"),
        ("webhook_url", "ftp://provider.example", "String should match pattern"),
        ("smtp_security", "ssl", "Input should be 'starttls', 'tls' or 'none'"),
        ("collector_max_batch", 0, "greater than or equal to 1"),
        ("sender_max_attempts", 0, "greater than or equal to 1"),
    ],
)
def test_bad_values_are_named(field: str, value: object, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_channel_settings_come_from_polku_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLKU_COLLECTOR_PORT", "9090")
    monkeypatch.setenv("POLKU_SMTP_FROM", "Shop <shop@example.com>")
    monkeypatch.setenv("POLKU_SMTP_PASSWORD", "pw")
    settings = Settings()
    assert settings.collector_port == 9090
    assert settings.smtp_from == "Shop <shop@example.com>"
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "pw"


def test_to_env_round_trips_the_channel_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        kafka_bootstrap="k:1",
        collector_api_keys=SecretStr("a,b"),
        smtp_from="Shop <shop@example.com>",
        smtp_security="none",
        sender_contacts_file=Path("/tmp/contacts.json"),
        webhook_url="http://127.0.0.1:1/hook",
    )
    for key, value in original.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == original
