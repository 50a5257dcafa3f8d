"""The reference email sender: the action's template, rendered, over SMTP.

smtplib in a worker thread, one SMTP session per message: simple, and a broken connection
never leaks into the next message. STARTTLS or implicit TLS and AUTH come from Settings. The
Message-ID is derived from the action id, so a receiving system can drop the one duplicate a
crash between "sent" and "recorded" could cause.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from schemas import Action, ContactChannel
from streams._settings import Settings
from streams.senders._contacts import ContactBook, ContactDirectory
from streams.senders._errors import (
    PermanentDeliveryError,
    SenderConfigError,
    TransientDeliveryError,
)
from streams.senders._loop import Delivered
from streams.senders._redact import redact
from streams.senders._templates import TemplateRenderer


class SmtpEmailSender:
    channel = ContactChannel.EMAIL

    def __init__(
        self,
        settings: Settings,
        *,
        renderer: TemplateRenderer | None = None,
        contacts: ContactDirectory | None = None,
    ) -> None:
        if not settings.smtp_from:
            raise SenderConfigError("POLKU_SMTP_FROM is not set: the From address of the emails")
        if settings.smtp_username and settings.smtp_security == "none":
            raise SenderConfigError(
                "POLKU_SMTP_USERNAME is set with POLKU_SMTP_SECURITY=none: the password would "
                "cross the network in clear text; use starttls or tls"
            )
        self._settings = settings
        self._from = settings.smtp_from
        self._domain = parseaddr(settings.smtp_from)[1].rpartition("@")[2]
        self._renderer = renderer or TemplateRenderer(settings.sender_templates_dir)
        self._contacts = contacts or ContactBook.from_file(settings.sender_contacts_file)

    @property
    def attempt_timeout_seconds(self) -> float:
        return self._settings.smtp_timeout_seconds

    def prepare(self, action: Action) -> EmailMessage:
        contact = self._contacts.lookup(action)
        if not contact.email:
            raise PermanentDeliveryError("no_contact", "no email address for this customer")
        rendered = self._renderer.render(action, contact)
        message = EmailMessage()
        message["From"] = self._from
        message["To"] = contact.email
        message["Subject"] = rendered["subject"]
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = f"<{action.action_id}@{self._domain}>"
        message["X-Polku-Action-Id"] = action.action_id
        message["X-Polku-Template"] = action.template
        message.set_content(rendered["text"])
        message.add_alternative(rendered["html"], subtype="html")
        return message

    async def deliver(self, prepared: EmailMessage) -> Delivered:
        await asyncio.to_thread(self._send, prepared)
        return Delivered("sent")

    async def aclose(self) -> None:
        return None

    def _send(self, message: EmailMessage) -> None:
        try:
            with self._connect() as smtp:
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise _refused(exc) from None
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError) as exc:
            raise SenderConfigError(f"SMTP server {self._where}: {redact(str(exc))}") from None
        except smtplib.SMTPResponseException as exc:
            raise _rejected(exc.smtp_code, exc.smtp_error) from None
        except (smtplib.SMTPException, OSError) as exc:  # lost connection, timeout, TLS, DNS
            detail = f"{self._where}: {type(exc).__name__}: {redact(str(exc))}"
            raise TransientDeliveryError("smtp_unavailable", detail) from None

    @property
    def _where(self) -> str:
        return f"{self._settings.smtp_host}:{self._settings.smtp_port}"

    def _connect(self) -> smtplib.SMTP:
        settings = self._settings
        timeout = settings.smtp_timeout_seconds
        smtp: smtplib.SMTP
        if settings.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=timeout, context=self._tls()
            )
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        try:
            if settings.smtp_security == "starttls":
                smtp.starttls(context=self._tls())
            if settings.smtp_username:
                password = settings.smtp_password
                smtp.login(settings.smtp_username, password.get_secret_value() if password else "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _tls(self) -> ssl.SSLContext:
        ca_file = self._settings.smtp_ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def _refused(exc: smtplib.SMTPRecipientsRefused) -> Exception:
    """The recipient was refused: a bounce if the server said no for good (5xx)."""
    replies = list(exc.recipients.values())
    code, text = replies[0] if replies else (550, b"recipient refused")
    if all(reply_code >= 500 for reply_code, _ in replies):
        return PermanentDeliveryError("recipient_refused", _reply(code, text), status="bounced")
    return TransientDeliveryError("recipient_deferred", _reply(code, text))


def _rejected(code: int, text: bytes | str) -> Exception:
    if code >= 500:
        return PermanentDeliveryError("smtp_rejected", _reply(code, text))
    return TransientDeliveryError("smtp_deferred", _reply(code, text))


def _reply(code: int, text: bytes | str) -> str:
    message = text.decode(errors="replace") if isinstance(text, bytes) else text
    return f"{code} {redact(message)}"
