"""Email over SMTP (smtplib): one plain-text message per notification, STARTTLS and AUTH when configured.

The subject is the notification's summary line; the body lists what an
operator needs (where, when, evidence, the idempotency key, which is also the
``X-Smoke-Idempotency-Key`` header and part of the Message-ID, so a mail
system or a person can spot a repeat).

>>> from alerting.notification import Notification
>>> n = Notification(alert_id="a" * 32, state="raised", kind="fire", severity="critical", sensor_id="s1",
...     event_time=1700000003.0, detected_at=1700000003.2, test=True)
>>> message = email_message(n, sender="smoke@example.org", recipients=["ops@example.org"])
>>> message["Subject"], message["X-Smoke-Idempotency-Key"][-7:]
('TEST FIRE raised (critical) at s1', ':raised')
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

import orjson

from alerting.channels import DeliveryError, summary
from alerting.notification import Notification
from ingest.settings import EmailChannel
from ingest.validation import format_timestamp


def email_message(n: Notification, *, sender: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = summary(n)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(n.detected_at, usegmt=True)
    message["Message-ID"] = f"<{n.alert_id}.{n.state}@smoke-alerting>"
    message["X-Smoke-Idempotency-Key"] = n.idempotency_key
    lines = [
        summary(n),
        "",
        f"incident:     {n.alert_id}",
        f"state:        {n.state}",
        f"sensor:       {n.sensor_id}",
        f"location:     {n.location.label() or 'unknown (not in the sensors table)'}",
        f"event time:   {format_timestamp(n.event_time)}",
        f"detected at:  {format_timestamp(n.detected_at)}",
    ]
    if n.score is not None:
        lines.append(f"score:        {n.score:.3g}")
    for key in ("by", "outcome", "note", "model_version"):
        value = getattr(n, key)
        if value:
            lines.append(f"{key.replace('_', ' ') + ':':<14}{value}")
    if n.test:
        lines.append("This is a TEST alarm.")
    if n.evidence:
        lines += ["", "evidence:", orjson.dumps(n.evidence, option=orjson.OPT_INDENT_2).decode()]
    message.set_content("\n".join(lines) + "\n")
    return message


class EmailSender:
    """An email channel; ``send`` returns when the SMTP server accepted the message for every recipient."""

    def __init__(self, config: EmailChannel) -> None:
        self.name = config.name
        self.config = config

    def send(self, n: Notification) -> None:
        c = self.config
        message = email_message(n, sender=c.sender, recipients=c.recipients)
        where = f"{c.host}:{c.port}"
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout_s) as smtp:
                if c.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if c.username:
                    password = c.password.get_secret_value() if c.password is not None else ""
                    smtp.login(c.username, password)
                refused = smtp.send_message(message, from_addr=c.sender, to_addrs=c.recipients)
        except smtplib.SMTPRecipientsRefused as err:
            raise DeliveryError(f"SMTP {where} refused every recipient: {_codes(err.recipients)}",
                                retryable=_any_temporary(err.recipients)) from None
        except smtplib.SMTPResponseException as err:
            # 4xx is "try again later"; 5xx refuses this message (a misconfigured login is retried:
            # once the settings are fixed and the router restarted, the notification still goes out).
            retryable = err.smtp_code < 500 or isinstance(err, smtplib.SMTPAuthenticationError)
            raise DeliveryError(f"SMTP {where} answered {err.smtp_code}: {_text(err.smtp_error)}",
                                retryable=retryable) from None
        except (TimeoutError, smtplib.SMTPException, OSError) as err:
            raise DeliveryError(f"SMTP {where} failed: {err!r}") from None
        if refused:
            # Accepted for some: a retry would send the others a second copy, so say which were refused.
            raise DeliveryError(f"SMTP {where} refused {_codes(refused)}", retryable=False)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _codes(refused: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{rcpt} ({code} {_text(text)})" for rcpt, (code, text) in refused.items())


def _any_temporary(refused: dict[str, tuple[int, bytes]]) -> bool:
    return any(code < 500 for code, _ in refused.values())
