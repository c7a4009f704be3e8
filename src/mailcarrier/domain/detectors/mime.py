"""A lean, lazy MIME reader for bounce emails.

The stdlib parser builds a full object tree and decodes every header through its policy
machinery; for a bounce we need a handful of headers, the text part, the status part and
the returned message's headers. :class:`MimePart` splits on demand: headers are parsed
the first time one is asked for, children the first time they are walked, payloads are
decoded only when read. It never raises on malformed input: a broken boundary leaves a
part without children, an unknown charset falls back to UTF-8 with replacement.
"""

from __future__ import annotations

import binascii
import quopri
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.utils import collapse_rfc2231_value, decode_rfc2231

__all__ = ["MimePart", "normalise_newlines"]

_MAX_DEPTH = 24
_LOGICAL_LINE = re.compile(r"\n(?![ \t])")
_PARAM = re.compile(r';\s*([A-Za-z0-9_.*!#$%&\'+\-^`|~]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
#: White space at the end of a line (before CRLF, LF or the end), for quoted-printable decoding.
_TRAILING_BLANKS = re.compile(rb"[ \t]+(?=\r?\n|\Z)")


def normalise_newlines(raw: bytes) -> bytes:
    """CRLF and bare CR (old Mac mail) become LF."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return raw


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    if raw.startswith(b"\n"):
        return b"", raw[1:]
    at = raw.find(b"\n\n")
    if at < 0:
        return raw, b""
    return raw[: at + 1], raw[at + 2:]


def _decode_words(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, binascii.Error):
        return value


class MimePart:
    """One MIME entity: headers, body bytes, children when multipart or encapsulated."""

    __slots__ = ("_body", "_children", "_ctype", "_depth", "_head", "_headers", "_index", "_params")

    def __init__(self, raw: bytes, depth: int = 0) -> None:
        if depth == 0 and raw.startswith(b"From "):  # an mbox "From " separator line
            nl = raw.find(b"\n")
            raw = raw[nl + 1:] if nl >= 0 else b""
        self._head, self._body = _split_head(raw)
        self._depth = depth
        self._headers: list[tuple[str, str]] | None = None
        self._index: dict[str, str] = {}
        self._ctype: str | None = None
        self._params: dict[str, str] = {}
        self._children: list[MimePart] | None = None

    # -- headers -------------------------------------------------------------------------
    def headers(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs in order, folded lines joined, values raw (not decoded)."""
        if self._headers is None:
            parsed: list[tuple[str, str]] = []
            text = self._head.decode("utf-8", "replace")
            # Split into logical lines (a fold starts with space or tab), then name: value.
            for line in _LOGICAL_LINE.split(text):
                name, sep, value = line.partition(":")
                stripped = name.strip()
                if not sep or not name or " " in stripped or name[0] in " \t":
                    if parsed and "=" in line:  # a fold that lost its indent ("boundary=...")
                        last, before = parsed[-1]
                        parsed[-1] = (last, before + " " + line.strip())
                    continue
                if "\n" in value:
                    value = " ".join(value.split())
                parsed.append((stripped, value.strip()))
            self._headers = parsed
            # The first header of each name wins: written last, going backwards.
            self._index = {name.lower(): value for name, value in reversed(parsed)}
        return self._headers

    def get(self, name: str, default: str = "") -> str:
        """The first header of that name (case-insensitive), RFC 2047 words decoded."""
        if self._headers is None:
            self.headers()
        value = self._index.get(name.lower())
        return default if value is None else _decode_words(value)

    def keys(self) -> list[str]:
        return [k for k, _ in self.headers()]

    # -- content type --------------------------------------------------------------------
    def _parse_type(self) -> str:
        if self._ctype is None:
            value = self.get("Content-Type")
            head, _, _ = value.partition(";")
            ctype = head.strip().lower()
            if "/" not in ctype:
                ctype = "text/plain"
            self._ctype = ctype
            params: dict[str, str] = {}
            for m in _PARAM.finditer(value):
                key, raw = m.group(1).lower(), m.group(2).strip()
                if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
                    raw = raw[1:-1].replace('\\"', '"')
                if key.endswith("*"):
                    key = key.rstrip("*").split("*", 1)[0]
                    raw = collapse_rfc2231_value(decode_rfc2231(raw))
                params.setdefault(key, raw)
            self._params = params
        return self._ctype

    @property
    def content_type(self) -> str:
        # Asked for every part on every walk: answered from the parsed value once there is one.
        ctype = self._ctype
        return ctype if ctype is not None else self._parse_type()

    def param(self, name: str) -> str:
        self._parse_type()
        return self._params.get(name, "")

    @property
    def charset(self) -> str:
        return self.param("charset").lower() or "utf-8"

    @property
    def filename(self) -> str:
        disposition = self.get("Content-Disposition")
        m = re.search(r'filename\*?=\s*"?([^";]+)', disposition, re.I)
        return m.group(1) if m else self.param("name")

    # -- structure -----------------------------------------------------------------------
    @property
    def children(self) -> list[MimePart]:
        if self._children is None:
            self._children = self._split_children()
        return self._children

    def _split_children(self) -> list[MimePart]:
        if self._depth >= _MAX_DEPTH:
            return []
        ctype = self.content_type
        if ctype in ("message/rfc822", "message/global") and self._body.strip():
            return [MimePart(self.payload().lstrip(b"\n"), self._depth + 1)]
        if not ctype.startswith("multipart/"):
            return []
        boundary = self.param("boundary").encode("utf-8", "replace")
        if not boundary:
            return []
        delimiter = b"--" + boundary
        body = b"\n" + self._body
        pieces = body.split(b"\n" + delimiter)
        parts = []
        for piece in pieces[1:]:
            if piece.startswith(b"--"):  # the closing delimiter
                break
            nl = piece.find(b"\n")
            if nl < 0:
                continue
            parts.append(MimePart(piece[nl + 1:], self._depth + 1))
        return parts

    def walk(self) -> Iterator[MimePart]:
        """This part and every part below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def is_multipart(self) -> bool:
        return bool(self.children)

    # -- payload -------------------------------------------------------------------------
    def payload(self) -> bytes:
        """The body with its Content-Transfer-Encoding undone."""
        encoding = self.get("Content-Transfer-Encoding").strip().lower()
        body = self._body
        if encoding == "base64":
            try:
                return binascii.a2b_base64(re.sub(rb"[^A-Za-z0-9+/=]", b"", body) + b"==")
            except binascii.Error:
                return body
        if encoding == "quoted-printable":
            # RFC 2045 6.7 (3): trailing white space on a line was added in transport and must
            # be deleted, or a soft line break "= " would stay in the text.
            return quopri.decodestring(_TRAILING_BLANKS.sub(b"", body))
        return body

    def text(self) -> str:
        """The decoded payload as text in its declared charset."""
        data = self.payload()
        try:
            return data.decode(self.charset, "replace")
        except (LookupError, UnicodeError):
            return data.decode("utf-8", "replace")
