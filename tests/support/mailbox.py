"""A real SMTP server on loopback (aiosmtpd) that keeps every email it accepts."""

import email
from dataclasses import dataclass
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from handoff_devenv.ports import free_ports
from tests.support.patients import record_page_body


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    body: str


class Mailbox:
    def __init__(self) -> None:
        self.received: list[Email] = []
        self.refused: set[str] = set()
        self.port = free_ports(1)[0]
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def to(self, address: str) -> list[Email]:
        return [e for e in self.received if e.to == address]

    # aiosmtpd handler hooks

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed: Message = email.message_from_bytes(envelope.content)
        body = parsed.get_payload(decode=True)
        text = body.decode() if isinstance(body, bytes) else str(parsed.get_payload())
        for address in envelope.rcpt_tos:
            self.received.append(Email(address, str(parsed["Subject"]), text))
            record_page_body(f"{parsed['Subject']}\n{text}")
        return "250 Message accepted"
