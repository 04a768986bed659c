"""Email over SMTP. A relay's acceptance is `sent`; SMTP reports no delivery back."""

from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from handoff_notify.adapters.providers import Outgoing
from handoff_notify.domain.delivery import (
    Accepted,
    Ambiguous,
    LookupOutcome,
    Permanent,
    SendOutcome,
    Transient,
    Unknowable,
)
from handoff_schemas.vocabulary import PageFailure


class SmtpProvider:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        start_tls: bool,
        username: str | None,
        password: str | None,
        timeout: float,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.start_tls, self.username, self.password = start_tls, username, password
        self.timeout = timeout

    async def send(self, message: Outgoing) -> SendOutcome:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.destination
        email["Subject"] = message.content.subject
        email["Message-ID"] = make_msgid(idstring=message.message_id.hex, domain="handoff")
        email.set_content(message.content.text)
        try:
            await aiosmtplib.send(
                email,
                hostname=self.host,
                port=self.port,
                start_tls=self.start_tls,
                username=self.username,
                password=self.password,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            return Permanent(PageFailure.INVALID_DESTINATION, _code(error.recipients[0].code))
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError) as error:
            return Transient(type(error).__name__)
        except aiosmtplib.SMTPResponseException as error:
            if 400 <= error.code < 500:
                return Transient(_code(error.code))
            return Permanent(PageFailure.PROVIDER_ERROR, _code(error.code))
        except (aiosmtplib.SMTPException, OSError) as error:
            # Cut off mid-conversation: the relay may have taken the message.
            return Ambiguous(type(error).__name__)
        return Accepted(email["Message-ID"])

    async def lookup(self, message: Outgoing, since: datetime) -> LookupOutcome:
        return Unknowable()

    async def close(self) -> None:
        return None


def _code(code: int) -> str:
    return f"smtp_{code}"
