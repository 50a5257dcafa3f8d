"""The SMTP sender against a real SMTP server (aiosmtpd) on 127.0.0.1: no broker needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from streams import Settings, free_port
from streams.senders import (
    Contact,
    ContactBook,
    PermanentDeliveryError,
    SenderConfigError,
    SmtpEmailSender,
    TemplateError,
    TransientDeliveryError,
)
from tests.streams.channels.builders import make_action
from tests.streams.channels.servers import SmtpSink, TlsFiles, body_text, self_signed_certificate

CONTACTS = ContactBook({"aino": Contact(email="aino@example.com", first_name="Aino")})


def _settings(port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": "127.0.0.1:1",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_from": "Polku Shop <shop@polku.example>",
        "smtp_timeout_seconds": 10,
    }
    return Settings(**(values | overrides))


def _sender(port: int, **overrides: Any) -> SmtpEmailSender:
    return SmtpEmailSender(_settings(port, **overrides), contacts=CONTACTS)


@pytest.mark.asyncio
async def test_the_email_arrives_with_text_and_html_parts() -> None:
    action = make_action()
    with SmtpSink() as smtp:
        sender = _sender(smtp.port)
        delivered = await sender.deliver(sender.prepare(action))
        [message] = smtp.messages

    assert delivered.status == "sent"
    assert message["To"] == "aino@example.com"
    assert message["From"] == "Polku Shop <shop@polku.example>"
    assert message["Subject"] == "Aino, your cart is waiting for you"
    assert message["Message-ID"] == f"<{action.action_id}@polku.example>"
    assert message["X-Polku-Action-Id"] == action.action_id
    text, html = body_text(message, "plain"), body_text(message, "html")
    for part in (text, html):
        assert "Trail shoe" in part
        assert "Wool sock" in part
    assert "<table" in html


@pytest.mark.asyncio
async def test_a_refused_recipient_is_a_bounce_without_the_address_in_the_detail() -> None:
    refusal = "550 5.1.1 <aino@example.com>: Recipient address rejected"
    with SmtpSink(refuse={"aino@example.com": refusal}) as smtp:
        sender = _sender(smtp.port)
        with pytest.raises(PermanentDeliveryError) as raised:
            await sender.deliver(sender.prepare(make_action()))
        assert smtp.messages == []
    assert raised.value.status == "bounced"
    assert raised.value.kind == "recipient_refused"
    assert raised.value.detail.startswith("550 5.1.1")
    assert "aino@example.com" not in raised.value.detail


@pytest.mark.asyncio
async def test_a_temporary_refusal_is_transient() -> None:
    with SmtpSink(refuse={"aino@example.com": "451 4.7.1 Try again later"}) as smtp:
        sender = _sender(smtp.port)
        with pytest.raises(TransientDeliveryError, match=r"451 4\.7\.1"):
            await sender.deliver(sender.prepare(make_action()))


@pytest.mark.asyncio
async def test_no_server_is_transient() -> None:
    sender = _sender(free_port())
    with pytest.raises(TransientDeliveryError) as raised:
        await sender.deliver(sender.prepare(make_action()))
    assert raised.value.kind == "smtp_unavailable"
    assert "ConnectionRefusedError" in raised.value.detail


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    files = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    if files is None:
        pytest.skip("the openssl tool is needed to make a test certificate")
    return files


@pytest.mark.asyncio
async def test_starttls_and_auth(tls: TlsFiles) -> None:
    with SmtpSink(tls=tls, login=("polku", "s3cret")) as smtp:
        sender = _sender(
            smtp.port,
            smtp_security="starttls",
            smtp_ca_file=tls.cert,
            smtp_username="polku",
            smtp_password=SecretStr("s3cret"),
        )
        await sender.deliver(sender.prepare(make_action()))
        assert len(smtp.messages) == 1


@pytest.mark.asyncio
async def test_a_wrong_password_stops_the_sender_instead_of_failing_actions(
    tls: TlsFiles,
) -> None:
    with SmtpSink(tls=tls, login=("polku", "s3cret")) as smtp:
        sender = _sender(
            smtp.port,
            smtp_security="starttls",
            smtp_ca_file=tls.cert,
            smtp_username="polku",
            smtp_password=SecretStr("wrong"),
        )
        with pytest.raises(SenderConfigError, match="535"):
            await sender.deliver(sender.prepare(make_action()))


@pytest.mark.asyncio
async def test_a_server_without_starttls_stops_the_sender() -> None:
    with SmtpSink() as smtp:
        sender = _sender(smtp.port, smtp_security="starttls")
        with pytest.raises(SenderConfigError, match="STARTTLS"):
            await sender.deliver(sender.prepare(make_action()))


def test_an_action_for_a_customer_without_an_address_fails_before_any_attempt() -> None:
    sender = _sender(free_port())
    with pytest.raises(PermanentDeliveryError) as raised:
        sender.prepare(make_action(customer_id="unknown-customer"))
    assert (raised.value.kind, raised.value.status) == ("no_contact", "failed")


def test_a_missing_template_fails_in_prepare() -> None:
    with pytest.raises(TemplateError, match="template_missing"):
        _sender(free_port()).prepare(make_action(template="no_such_template"))


def test_the_sender_needs_a_from_address_and_refuses_auth_in_clear_text(tmp_path: Path) -> None:
    with pytest.raises(SenderConfigError, match="POLKU_SMTP_FROM"):
        SmtpEmailSender(_settings(25, smtp_from=None))
    with pytest.raises(SenderConfigError, match="clear text"):
        SmtpEmailSender(_settings(25, smtp_username="u", smtp_password=SecretStr("p")))
