"""`polku` subcommands of the channel side: the HTTP collector and the senders."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from schemas import ContactChannel
from streams._settings import Settings

# the channels the webhook sender serves; kept here so `polku --help` imports no sender code
WEBHOOK_CHANNELS = frozenset(ContactChannel) - {ContactChannel.EMAIL}


def cmd_collector(settings: Settings, args: argparse.Namespace) -> int:
    from streams._collector import run_collector
    from streams._collector_openapi import openapi_document

    if args.openapi:
        from schemas import render

        sys.stdout.buffer.write(render(openapi_document()))
        return 0
    _log_to_stderr(settings)
    return run_collector(settings)


def cmd_sender_email(settings: Settings, _: argparse.Namespace) -> int:
    from streams.senders import SmtpEmailSender, run_sender

    _log_to_stderr(settings)
    return run_sender(settings, SmtpEmailSender(settings))


def cmd_sender_webhook(settings: Settings, args: argparse.Namespace) -> int:
    from streams.senders import WebhookSender, run_sender

    _log_to_stderr(settings)
    return run_sender(settings, WebhookSender(settings, ContactChannel(args.channel)))


def _log_to_stderr(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def register(commands: Any) -> None:
    """Add this module's subcommands to the `polku` parser's subparsers."""
    collector = commands.add_parser(
        "collector", help="HTTP collector: POST touchpoints, validated and produced to Kafka"
    )
    collector.add_argument(
        "--openapi", action="store_true", help="print the OpenAPI description and exit"
    )
    collector.set_defaults(run=cmd_collector)

    sender = commands.add_parser("sender", help="deliver the actions of one channel")
    kinds = sender.add_subparsers(dest="sender", required=True)
    kinds.add_parser("email", help="email over SMTP (POLKU_SMTP_*)").set_defaults(
        run=cmd_sender_email
    )
    webhook = kinds.add_parser(
        "webhook", help="SMS, push, staff task or offer as a JSON POST (POLKU_WEBHOOK_*)"
    )
    webhook.add_argument(
        "--channel",
        required=True,
        choices=sorted(channel.value for channel in WEBHOOK_CHANNELS),
        help="the action topic to consume",
    )
    webhook.set_defaults(run=cmd_sender_webhook)
