"""Real local servers for the sender tests: an SMTP server (aiosmtpd) and a webhook (aiohttp).

Both bind 127.0.0.1 only and record what they receive. Not mocks: the senders speak real SMTP
and real HTTP to them.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from streams import free_port

HOST = "127.0.0.1"


class _Recorder:
    """aiosmtpd handler: refuses the listed recipients with the given reply, keeps the rest."""

    def __init__(self, refuse: dict[str, str]) -> None:
        self.refuse = refuse
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"


class SmtpSink:
    """`with SmtpSink() as smtp:` a real SMTP server on 127.0.0.1:smtp.port in its own thread."""

    def __init__(
        self,
        *,
        refuse: dict[str, str] | None = None,
        tls: TlsFiles | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self._recorder = _Recorder(refuse or {})
        options: dict[str, Any] = {}
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
            options |= {"tls_context": context, "require_starttls": True}
        if login is not None:
            options |= {
                "authenticator": _authenticator(*login),
                "auth_required": True,
                "auth_require_tls": True,
            }
        self._controller = Controller(self._recorder, hostname=HOST, port=self.port, **options)

    @property
    def messages(self) -> list[EmailMessage]:
        with self._recorder.lock:
            return list(self._recorder.messages)

    def wait_for(
        self, found: Callable[[list[EmailMessage]], bool], timeout: float, why: str
    ) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while not found(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {why}")
            time.sleep(0.05)
        return self.messages

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._controller.stop()


def _authenticator(user: str, password: str) -> Callable[..., AuthResult]:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(),
            password.encode(),
        )
        return AuthResult(success=ok, handled=False)

    return check


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def self_signed_certificate(directory: Path) -> TlsFiles | None:
    """A certificate for 127.0.0.1 made with the openssl tool, or None where there is none."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(files.key), "-out", str(files.cert),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return files


def body_text(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert isinstance(part, EmailMessage), f"no text/{subtype} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


@dataclass(frozen=True)
class WebhookCall:
    received_at: datetime
    monotonic: float
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"status": "accepted"}'


class WebhookServer:
    """`async with WebhookServer([Reply(503), ...]) as hook:` answers from the script, then 200."""

    def __init__(self, script: list[Reply] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/hooks/polku"
        self.calls: list[WebhookCall] = []
        self._script = list(script or [])
        app = web.Application()
        app.router.add_post("/hooks/polku", self._handle)
        self._runner = web.AppRunner(app, access_log=None)

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls.append(
            WebhookCall(
                received_at=datetime.now(UTC),
                monotonic=time.monotonic(),
                headers=dict(request.headers),
                body=await request.json(),
            )
        )
        reply = self._script.pop(0) if self._script else Reply()
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    async def __aenter__(self) -> WebhookServer:
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._runner.cleanup()
