"""Media types (RFC 9110 §8.3.1): the grammar a stored Content-Type must match, and which types are active.

    media-type = type "/" subtype parameters
    parameters = *( OWS ";" OWS [ parameter ] )
    parameter  = parameter-name "=" ( token / quoted-string )

A stored type is sent back verbatim in the Content-Type header of every download, so anything outside the
grammar (CR/LF, control characters, non-ASCII) would break or split that response; it is refused on the way in
and replaced on the way out. obs-text (bytes 0x80-0xFF) is obsolete and refused too: headers are ASCII here.
"""

from __future__ import annotations

import re

MAX_LENGTH = 255  # the column's width
FALLBACK = "application/octet-stream"

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # noqa: S105 (a grammar rule, not a secret)
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_OWS = r"[ \t]*"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:{_OWS};{_OWS}(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*")

# Rendered inline by a browser without running anything from the file: everything else (HTML, SVG, XML,
# JavaScript, and any type a browser might treat as a document) is served as an attachment in a sandbox.
_PASSIVE_PREFIXES = ("image/", "audio/", "video/", "font/")
_PASSIVE = frozenset({"text/plain", "text/csv", "application/json", "application/pdf", "application/octet-stream"})


def is_media_type(value: str) -> bool:
    """True if `value` is one media type by RFC 9110's grammar (ASCII only, at most MAX_LENGTH characters)."""
    return len(value) <= MAX_LENGTH and _MEDIA_TYPE.fullmatch(value) is not None


def essence(value: str) -> str:
    """`type/subtype` in lower case, without parameters."""
    return value.split(";", 1)[0].strip().lower()


def is_passive(value: str) -> bool:
    """True for types a browser shows inline without executing or rendering the file as a document."""
    kind = essence(value)
    if kind.endswith(("+xml", "/xml", "xml-dtd")):  # image/svg+xml and friends are documents with scripts
        return False
    return kind in _PASSIVE or kind.startswith(_PASSIVE_PREFIXES)


def safe(value: str | None) -> str:
    """A stored type fit for a response header: itself if valid, else the generic binary type."""
    return value if value and is_media_type(value) else FALLBACK
