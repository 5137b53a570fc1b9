"""Email templates (Jinja2): `<kind>.subject.txt`, `<kind>.txt` and `<kind>.html` under templates/, with the
product name and the console link; a kind without its own templates uses `notice` (a title and a body)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape

from pockity.kit.time import utcnow
from pockity.mail.links import ACTION_PLACEHOLDER, OPTIONAL_KINDS, action_url, unsubscribe_token

_TEMPLATES = Path(__file__).parent / "templates"
_ENV = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Identity:
    """What every message says about the sender: read from the settings where the job is composed."""

    product_name: str
    console_url: str
    email_from: str
    api_url: str = ""  # where unsubscribe links point (the public base URL)
    unsubscribe_key: bytes | None = None  # no key: no unsubscribe links
    action_key: bytes | None = None  # signs account action links (verify, reset); no key: none are sent

    @property
    def domain(self) -> str:
        address = parseaddr(self.email_from)[1]
        return address.rpartition("@")[2] or "localhost"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text_body: str
    html_body: str


def _template_name(kind: str, context: dict[str, Any]) -> str:
    if "action" in context:
        return "action"  # a message whose point is one link (verify, reset, confirm)
    name = kind.replace(".", "_")
    try:
        _ENV.get_template(f"{name}.txt")
    except TemplateNotFound:
        return "notice"
    return name


def unsubscribe_url(identity: Identity, user_id: str | None, kind: str) -> str | None:
    """The one-click unsubscribe link of a user's optional notice kind; None for essential kinds."""
    if identity.unsubscribe_key is None or user_id is None or kind not in OPTIONAL_KINDS:
        return None
    return f"{identity.api_url}/api/mail/unsubscribe?token={unsubscribe_token(identity.unsubscribe_key, user_id, kind)}"


def render(kind: str, context: dict[str, Any], identity: Identity, unsubscribe: str | None = None) -> Rendered:
    """The subject and both bodies of a message of this kind (with its unsubscribe link, if it has one)."""
    if "action" in context and identity.action_key is None:
        raise ValueError("an account action link needs the action key (JWT_SECRET)")
    name = _template_name(kind, context)
    values = {
        **context,
        "product_name": identity.product_name,
        "console_url": identity.console_url,
        "unsubscribe_url": unsubscribe,
        # The link of an account action is put in when the message is sent (with_action_link), never stored.
        "action_url": ACTION_PLACEHOLDER if "action" in context else None,
    }
    subject = " ".join(_ENV.get_template(f"{name}.subject.txt").render(values).split())
    return Rendered(
        subject=subject[:300],
        text_body=_ENV.get_template(f"{name}.txt").render(values),
        html_body=_ENV.get_template(f"{name}.html").render(values),
    )


def with_action_link(body: str, context: dict[str, Any], identity: Identity) -> str:
    """A stored body with its account action link filled in (a body without one is returned as it is)."""
    action = context.get("action")
    if not isinstance(action, dict) or ACTION_PLACEHOLDER not in body:
        return body
    if identity.action_key is None:
        raise ValueError("an account action link needs the action key")
    return body.replace(ACTION_PLACEHOLDER, action_url(identity.console_url, identity.action_key, action))


def page(name: str, **values: Any) -> str:
    """One of the small HTML pages a person reaches from an email (the unsubscribe confirmation)."""
    return _ENV.get_template(f"{name}.html").render(values)


def header_id(outbox_id: str, identity: Identity) -> str:
    """The message's Message-ID: the outbox id at the sender's domain, the same on every attempt and resend."""
    return f"<{outbox_id}@{identity.domain}>"


def build(
    *,
    recipient: str,
    subject: str,
    text_body: str,
    html_body: str,
    message_id: str,
    identity: Identity,
    unsubscribe: str | None = None,
) -> EmailMessage:
    """The MIME message: text with an HTML alternative."""
    message = EmailMessage()
    message["From"] = identity.email_from
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(utcnow())
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    if unsubscribe:  # RFC 8058: mail clients offer a button that POSTs to it
        message["List-Unsubscribe"] = f"<{unsubscribe}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text_body)
    message.add_alternative(html_body, subtype="html")
    return message
