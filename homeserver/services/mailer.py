"""Sending e-mail through the configured SMTP server (Twisted's SMTP client): STARTTLS
required when configured, or TLS from the first byte, with optional credentials."""

from __future__ import annotations

import email.utils
import logging
from email.message import EmailMessage
from io import BytesIO
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, endpoints, ssl
from twisted.mail.smtp import ESMTPSenderFactory

if TYPE_CHECKING:
    from config.schema import EmailConfig

logger = logging.getLogger(__name__)


class Mailer:
    def __init__(self, reactor: Any, config: EmailConfig) -> None:
        self.reactor = reactor
        self.config = config

    async def send(self, to: str, subject: str, text: str) -> None:
        config = self.config
        message = EmailMessage()
        message["From"] = config.notif_from
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = email.utils.formatdate(localtime=False)
        message["Message-ID"] = email.utils.make_msgid()
        message.set_content(text)
        sender = email.utils.parseaddr(config.notif_from)[1]
        host = str(config.smtp_host)
        done: defer.Deferred[Any] = defer.Deferred()
        factory = ESMTPSenderFactory(
            (config.smtp_user or "").encode() or None,
            (config.smtp_pass or "").encode() or None,
            sender,
            [to],
            BytesIO(message.as_bytes()),
            done,
            requireAuthentication=bool(config.smtp_user),
            requireTransportSecurity=config.require_transport_security and not config.force_tls,
            hostname=host,
        )
        endpoint: Any
        if config.force_tls:
            options = ssl.optionsForClientTLS(host)
            endpoint = endpoints.SSL4ClientEndpoint(self.reactor, host, config.smtp_port, options)
        else:
            endpoint = endpoints.TCP4ClientEndpoint(
                self.reactor, host, config.smtp_port, timeout=30
            )
        await endpoint.connect(factory)
        await done
