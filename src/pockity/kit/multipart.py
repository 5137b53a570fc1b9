"""Streaming multipart/form-data: parts and their bytes as they arrive, never the whole body.

Starlette's `request.form()` spools files to memory or disk first; uploads must go straight to storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

# A part's headers are a few hundred bytes; without a bound a client could grow them without end.
MAX_HEADER_BYTES = 16 * 1024
MAX_BOUNDARY_LENGTH = 256  # python-multipart's own limit (RFC 2046 says 70)


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data (a 400)."""


class NotMultipart(MultipartError):
    """The request is not multipart/form-data with a boundary at all (a 415)."""


@dataclass
class PartStart:
    name: str
    filename: bytes | None  # raw: whether it must be UTF-8 (it is a file name) is the caller's rule
    content_type: str | None


@dataclass
class PartData:
    data: bytes


@dataclass
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


@dataclass
class _Collector:
    events: list[Event] = field(default_factory=list)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    field_name: bytes = b""
    value: bytes = b""
    header_bytes: int = 0

    def on_part_begin(self) -> None:
        self.headers, self.header_bytes = {}, 0

    def _count(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > MAX_HEADER_BYTES:
            raise MultipartError(f"a part's headers are longer than {MAX_HEADER_BYTES} bytes")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.field_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.field_name.lower()] = self.value
        self.field_name, self.value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise MultipartError("a part has no name")
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError("a part's name is not valid UTF-8") from None
        ctype = self.headers.get(b"content-type")
        self.events.append(
            PartStart(
                name=text,
                filename=options.get(b"filename"),
                content_type=ctype.decode("latin-1").strip(" \t") if ctype else None,
            )
        )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self.events.append(PartData(bytes(data[start:end])))

    def on_part_end(self) -> None:
        self.events.append(PartEnd())


def boundary_of(content_type: str) -> bytes:
    """The boundary of a multipart/form-data Content-Type (NotMultipart if it is another type or has none)."""
    ctype, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise NotMultipart("expected multipart/form-data with a boundary")
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise MultipartError(f"the boundary is longer than {MAX_BOUNDARY_LENGTH} characters")
    return boundary


async def events(body: AsyncIterator[bytes], boundary: bytes) -> AsyncIterator[Event]:
    """Parse as the body arrives; yields PartStart, then PartData chunks, then PartEnd for each part."""
    collector = _Collector()
    # FormParserError is the base of every error python-multipart raises (the boundary check in the
    # constructor raises it directly); each is the client's malformed body.
    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": collector.on_part_begin,
                "on_header_field": collector.on_header_field,
                "on_header_value": collector.on_header_value,
                "on_header_end": collector.on_header_end,
                "on_headers_finished": collector.on_headers_finished,
                "on_part_data": collector.on_part_data,
                "on_part_end": collector.on_part_end,
            },
        )
    except FormParserError as exc:
        raise MultipartError(str(exc)) from None
    async for chunk in body:
        if not chunk:
            continue
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise MultipartError(str(exc)) from None
        batch, collector.events = collector.events, []
        for event in batch:
            yield event
    try:
        parser.finalize()
    except FormParserError as exc:
        raise MultipartError(str(exc)) from None
    for event in collector.events:
        yield event
