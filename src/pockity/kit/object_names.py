"""Rules for user-chosen object names and folder prefixes (`users/{id}/` + name is the physical key)."""

from __future__ import annotations

import unicodedata

MAX_KEY_BYTES = 1024
# Invisible direction and byte-order marks can disguise a name ("gpj.exe" shown as "exe.jpg").
_DISGUISING = set("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


class InvalidName(ValueError):
    """The name breaks one of the rules; the message says which."""


def has_control_characters(text: str) -> bool:
    """Control characters or lone surrogates: never in a name (and PostgreSQL cannot even compare a NUL)."""
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def _check_segments(name: str, *, allow_trailing_slash: bool) -> None:
    if name.startswith("/"):
        raise InvalidName("must not start with '/'")
    if "\\" in name:
        raise InvalidName("must not contain a backslash")
    if has_control_characters(name):
        raise InvalidName("must not contain control characters")
    if any(ch in _DISGUISING for ch in name):
        raise InvalidName("must not contain invisible direction or byte-order marks")
    segments = name.split("/")
    if allow_trailing_slash and segments and segments[-1] == "":
        segments = segments[:-1]
    for seg in segments:
        if seg in ("", ".", ".."):
            raise InvalidName("must not contain empty, '.' or '..' path segments")


def validate_object_name(name: str, physical_prefix: str = "") -> str:
    """Return the name unchanged if it is valid under `physical_prefix`, else raise InvalidName."""
    if not name:
        raise InvalidName("must not be empty")
    _check_segments(name, allow_trailing_slash=False)
    if len((physical_prefix + name).encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidName(f"must be at most {MAX_KEY_BYTES} bytes including the user prefix")
    return name


def normalise_folder(prefix: str) -> str:
    """A folder prefix like `reports/`: valid segments, always ending with one slash."""
    if not prefix:
        raise InvalidName("must not be empty")
    folder = prefix if prefix.endswith("/") else prefix + "/"
    _check_segments(folder, allow_trailing_slash=True)
    if len(folder.encode("utf-8")) > MAX_KEY_BYTES - 64:
        raise InvalidName("is too long")
    return folder
