"""Message composition: a mailing's templates, rendered per recipient, composed and DKIM-signed.

One module owns the whole path from a stored mailing to the bytes handed to SMTP, so
that the services (which check templates when a mailing is created) and the delivery
worker (which renders each claimed delivery) share it without importing each other:

- **templates**: Jinja2 in an immutable sandbox (no loader, so no file access; no private
  attributes; context objects cannot be mutated). :func:`check_templates` runs at creation
  against a sample contact; :class:`MailingRenderer` compiles them once per mailing.
- **headers**: :class:`MailingRenderer` derives the VERP return path, Message-ID,
  unsubscribe token and Feedback-ID per delivery and hands the values to the pure
  :func:`mailcarrier.domain.message.compose_message`.
- **signing**: :class:`DkimSigner` (RFC 6376 relaxed/relaxed; RSA-SHA256 and/or Ed25519-SHA256,
  RFC 8463: one signature per key, the body hashed once). dkimpy re-parses and
  re-canonicalises the whole message on every call (~11 ms
  for a 30 KB message); here the message is already CRLF-clean bytes from the composer,
  the body is canonicalised and hashed once with ``hashlib`` and the header hash signed with
  ``cryptography``. The tests check every kind of signature with dkimpy's own verifier.

Keys are passed in: the renderer takes a :class:`DkimKey` (or none), and loading or
generating key files is the caller's I/O (``mailcarrier.delivery.dkim_keys``). Link
rewriting for tracking plugs in as a :class:`LinkHook`
(``mailcarrier.services.tracking.links.make_link_hook``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import formataddr
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from jinja2 import Template, TemplateError

from mailcarrier.domain.errors import InvalidInputError
from mailcarrier.domain.message import MessageParts, compose_message
from mailcarrier.domain.tracking import TokenPurpose, TrackingToken, encode_token
from mailcarrier.domain.verp import VerpAddress, encode_return_path
from mailcarrier.services.template_sandbox import BoundedSandbox

__all__ = [
    "SIGNED_HEADERS",
    "TRACKING_KEY_ID",
    "DkimKey",
    "DkimSigner",
    "LinkHook",
    "MailingRenderer",
    "MailingSource",
    "RecipientData",
    "RenderedBodies",
    "RenderedMessage",
    "TemplateFields",
    "TemplateRenderError",
    "check_templates",
    "template_context",
]

#: Default key id of unsubscribe tokens (the tracking_key_id setting; decode_token looks secrets up by it).
TRACKING_KEY_ID = 1


# --- DKIM signing ----------------------------------------------------------------------------

#: Headers covered by the signature, when present.
SIGNED_HEADERS = (
    "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
    "list-unsubscribe", "list-unsubscribe-post", "feedback-id",
)
_WSP_RUN = re.compile(rb"[ \t]+")
_WSP_COLLAPSE = re.compile(rb"[ \t]{2,}|\t")
_FOLD = re.compile(rb"\r\n(?=[ \t])")


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A private key for one signing domain and selector."""

    domain: str
    selector: str
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @classmethod
    def from_pem(cls, domain: str, selector: str, pem: bytes) -> DkimKey:
        """Load a PEM private key; ValueError if it is not RSA (>= 1024 bits) or Ed25519."""
        key = serialization.load_pem_private_key(pem, password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 1024:
                raise InvalidInputError(f"DKIM RSA key for {domain} is {key.key_size} bits; use 2048")
            return cls(domain, selector, key)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return cls(domain, selector, key)
        raise InvalidInputError(f"DKIM key for {domain} must be RSA or Ed25519, got {type(key).__name__}")

    @property
    def algorithm(self) -> str:
        return "ed25519-sha256" if isinstance(self.private_key, ed25519.Ed25519PrivateKey) else "rsa-sha256"


def _relaxed_body(body: bytes) -> bytes:
    # RFC 6376 3.4.4. A regex over every single space costs ~0.7 ms per 30 KB body, more
    # than the RSA signature: only runs of 2+ blanks and tabs need rewriting (checked in C
    # first), and once runs are single spaces, trailing ones go with a plain replace.
    if b"\t" in body or b"  " in body:
        body = _WSP_COLLAPSE.sub(b" ", body)
    body = body.replace(b" \r\n", b"\r\n")
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    value = _WSP_RUN.sub(b" ", _FOLD.sub(b"", value)).strip(b" \t\r\n")
    return name.strip().lower() + b":" + value


def _split_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """Header fields in order as (name, raw value) with folding kept."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields


class DkimSigner:
    """Signs composed messages for one domain, with one key or several (RSA beside Ed25519)."""

    def __init__(self, key: DkimKey, *more: DkimKey) -> None:
        self._keys = (key, *more)

    @property
    def keys(self) -> tuple[DkimKey, ...]:
        return self._keys

    def signature_header(self, message: bytes, *, timestamp: int) -> bytes:
        """The ``DKIM-Signature:`` header lines (with CRLF), one per key, to put in front of
        ``message``; the body is canonicalised and hashed once for all of them."""
        head, sep, body = message.partition(b"\r\n\r\n")
        if not sep:
            head, body = message, b""
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest()).decode("ascii")
        latest: dict[bytes, bytes] = {}
        for name, value in _split_headers(head):
            latest[name.strip().lower()] = value  # the last instance is the one verifiers pick first
        names = [n for n in SIGNED_HEADERS if n.encode("ascii") in latest]
        signed = b"".join(
            _relaxed_header(n.encode("ascii"), latest[n.encode("ascii")]) + b"\r\n" for n in names
        )
        lines: list[bytes] = []
        for key in self._keys:
            tags = (
                f"v=1; a={key.algorithm}; c=relaxed/relaxed; d={key.domain}; s={key.selector}; "
                f"t={timestamp}; h={':'.join(names)}; bh={body_hash}; b="
            )
            data = signed + _relaxed_header(b"DKIM-Signature", b" " + tags.encode("ascii"))
            signature = base64.b64encode(self._sign(key, data)).decode("ascii")
            lines.append(f"DKIM-Signature: {tags}{signature}\r\n".encode("ascii"))
        return b"".join(lines)

    def sign(self, message: bytes, *, timestamp: int) -> bytes:
        """The message with its signature header prepended."""
        return self.signature_header(message, timestamp=timestamp) + message

    @staticmethod
    def _sign(key: DkimKey, data: bytes) -> bytes:
        private_key = key.private_key
        if isinstance(private_key, ed25519.Ed25519PrivateKey):
            return private_key.sign(hashlib.sha256(data).digest())
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


# --- templates -------------------------------------------------------------------------------


class TemplateRenderError(InvalidInputError):
    """A mailing template does not compile or render (wrong syntax, unknown variable, unsafe access)."""


class TemplateFields(dict[str, Any]):
    """Custom fields as templates see them: a field a contact lacks renders empty.

    Top-level names stay strict (a misspelt ``{{ frist_name }}`` is an error at create
    time), but custom fields vary per contact and must not fail a send.
    """

    def __missing__(self, key: str) -> str:
        return ""


def _environment() -> BoundedSandbox:
    # Immutable sandbox: templates can neither read files (no loader) nor touch private
    # attributes, nor mutate the context objects they are given; each render is bounded in
    # output size, loop iterations and time (services/template_sandbox.py).
    return BoundedSandbox(keep_trailing_newline=True)


def _compile(env: BoundedSandbox, label: str, source: str) -> Template:
    try:
        return env.from_string(source)
    except TemplateError as error:
        raise TemplateRenderError(f"{label} template: {error}") from error


def template_context(email: str, first_name: str, last_name: str, fields: Mapping[str, Any],
                     unsubscribe_url: str) -> dict[str, Any]:
    """The names a template may use, for one contact."""
    return {"email": email, "first_name": first_name, "last_name": last_name,
            "fields": TemplateFields(fields), "unsubscribe_url": unsubscribe_url}


def check_templates(subject: str, html: str, text: str, sample: Mapping[str, Any]) -> None:
    """Compile the three templates and render them for ``sample``; TemplateRenderError if any fails."""
    env = _environment()
    for label, source in (("subject", subject), ("html", html), ("text", text)):
        try:
            _compile(env, label, source).render(sample)
        except TemplateRenderError:
            raise
        except Exception as error:  # any render failure is the template's fault
            raise TemplateRenderError(
                f"{label} template fails for sample contact {sample.get('email')}: {error}") from error


# --- rendering one delivery ------------------------------------------------------------------


class MailingSource(Protocol):
    """The columns of a stored mailing that composition reads (a ``mailings`` row has them)."""

    @property
    def id(self) -> int: ...
    @property
    def account_id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def sending_domain(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def html_body(self) -> str: ...
    @property
    def text_body(self) -> str: ...
    @property
    def from_name(self) -> str: ...
    @property
    def from_address(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RecipientData:
    """What the worker knows about one claimed delivery."""

    delivery_id: int
    contact_id: int
    email: str
    first_name: str
    last_name: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RenderedBodies:
    subject: str
    html: str
    text: str


class LinkHook(Protocol):
    """Rewrites the personalised bodies of one delivery (e.g. tracked links, open pixel).

    It gets the mailing's renderer for the ids and the unsubscribe token it must leave
    alone, and returns new bodies; the renderer then composes and signs them. Rendering
    never writes to the database: whatever the rewriting needs stored (the mailing's link
    rows) is stored by :meth:`prepare`, which the worker calls once per claimed batch, in a
    thread and in a write transaction of its own, before any message of the batch is
    rendered for sending.
    """

    def __call__(self, bodies: RenderedBodies, renderer: MailingRenderer,
                 recipient: RecipientData) -> RenderedBodies: ...

    def prepare(self, renderer: MailingRenderer, recipients: Sequence[RecipientData]) -> None: ...


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    envelope_from: str
    recipient: str
    message_id: str
    data: bytes
    #: the subject as this recipient gets it (rendered), kept with the delivery as evidence
    subject: str = ""


class MailingRenderer:
    """Turns a delivery into signed message bytes; built once per mailing, reused per message."""

    def __init__(self, mailing: MailingSource, *, secret: bytes, bounce_domain: str, public_url: str,
                 dkim_key: DkimKey | Sequence[DkimKey] | None = None, link_hook: LinkHook | None = None,
                 tracking_key_id: int = TRACKING_KEY_ID) -> None:
        env = _environment()
        self.mailing_id: int = mailing.id
        self.account_id: int = mailing.account_id
        self.kind: str = mailing.kind
        self.sending_domain: str = mailing.sending_domain
        self._subject = _compile(env, "subject", mailing.subject)
        self._html = _compile(env, "html", mailing.html_body)
        self._text = _compile(env, "text", mailing.text_body)
        self._from = (formataddr((mailing.from_name, mailing.from_address)) if mailing.from_name
                      else mailing.from_address)
        self._feedback_id = f"{mailing.id}:{mailing.account_id}:{mailing.kind}:mailcarrier"
        self._secret, self._bounce_domain = secret, bounce_domain
        self._public_url = public_url.rstrip("/")
        self._hook = link_hook
        self._key_id = tracking_key_id
        keys = (dkim_key,) if isinstance(dkim_key, DkimKey) else tuple(dkim_key or ())
        self._signer = DkimSigner(*keys) if keys else None
        # The installation's own part of every Message-ID: row ids alone repeat from one
        # installation to the next, and mailbox providers drop messages whose Message-ID
        # they have seen. Derived from the master secret (random per installation).
        self._mid_key = hmac.new(secret, b"mailcarrier message-id", hashlib.sha256).digest()

    def unsubscribe_token(self, delivery_id: int) -> str:
        token = TrackingToken(TokenPurpose.UNSUBSCRIBE, self.account_id, self.mailing_id, delivery_id)
        return encode_token(token, master_secret=self._secret, key_id=self._key_id)

    def return_path(self, delivery_id: int) -> str:
        return encode_return_path(VerpAddress(self.account_id, self.mailing_id, delivery_id),
                                  key=self._secret, bounce_domain=self._bounce_domain)

    def message_id(self, delivery_id: int) -> str:
        """Stable per delivery (a retry carries the first attempt's Message-ID) and unique
        across installations: the ids plus a keyed hash of them under this installation's secret."""
        ids = f"{delivery_id}.{self.mailing_id}.{self.account_id}"
        tag = hmac.new(self._mid_key, ids.encode("ascii"), hashlib.sha256).digest()[:10]
        return f"mc.{ids}.{base64.b32encode(tag).decode('ascii').lower()}@{self.sending_domain}"

    def bodies(self, recipient: RecipientData, unsubscribe_url: str | None = None) -> RenderedBodies:
        """The recipient's subject and bodies as the templates render them (no link rewriting)."""
        context = template_context(recipient.email, recipient.first_name, recipient.last_name,
                                   recipient.fields,
                                   unsubscribe_url or self._unsubscribe_url(recipient.delivery_id))
        try:
            return RenderedBodies(self._subject.render(context), self._html.render(context),
                                  self._text.render(context))
        except Exception as error:  # a contact's data broke the template
            raise TemplateRenderError(f"rendering for {recipient.email} failed: {error}") from error

    def personalise(self, recipient: RecipientData, unsubscribe_url: str | None = None) -> RenderedBodies:
        """The recipient's subject and bodies; the link hook, when set, rewrites them."""
        bodies = self.bodies(recipient, unsubscribe_url)
        return self._hook(bodies, self, recipient) if self._hook else bodies

    def _unsubscribe_url(self, delivery_id: int) -> str:
        return f"{self._public_url}/u/{self.unsubscribe_token(delivery_id)}"

    def render(self, recipient: RecipientData, now: datetime) -> RenderedMessage:
        """Personalise, compose and sign one message (ValueError/TemplateRenderError if impossible)."""
        token = self.unsubscribe_token(recipient.delivery_id)
        bodies = self.personalise(recipient, f"{self._public_url}/u/{token}")
        message_id = self.message_id(recipient.delivery_id)
        return_path = self.return_path(recipient.delivery_id)
        subject = " ".join(bodies.subject.split())
        parts = MessageParts(
            from_header=self._from, to=recipient.email, subject=subject, text=bodies.text,
            html=bodies.html, message_id=message_id, date=now, return_path=return_path,
            unsubscribe_url=f"{self._public_url}/u/{token}",
            unsubscribe_mailto=f"unsubscribe@{self._bounce_domain}?subject=unsubscribe-{token}",
            feedback_id=self._feedback_id, delivery_token=str(recipient.delivery_id),
            boundary=f"=_mc{recipient.delivery_id}_{secrets.token_hex(8)}",
        )
        composed = compose_message(parts)
        data = composed.data
        if self._signer is not None:
            data = self._signer.sign(data, timestamp=int(now.timestamp()))
        return RenderedMessage(composed.envelope_from, composed.envelope_to, message_id, data, subject)
