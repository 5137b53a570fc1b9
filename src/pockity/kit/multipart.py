"""Streaming multipart/form-data: parts and their bytes as they arrive, never the whole body.

Starlette's `request.form()` spools files to memory or disk first; uploads must go straight to storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass
class PartStart:
    name: str
    filename: str | None
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

    def on_part_begin(self) -> None:
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.field_name.lower()] = self.value
        self.field_name, self.value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise MultipartError("a part has no name")
        filename = options.get(b"filename")
        ctype = self.headers.get(b"content-type")
        self.events.append(
            PartStart(
                name=name.decode("utf-8", "replace"),
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                content_type=ctype.decode("latin-1").strip() if ctype else None,
            )
        )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self.events.append(PartData(bytes(data[start:end])))

    def on_part_end(self) -> None:
        self.events.append(PartEnd())


def boundary_of(content_type: str) -> bytes:
    ctype, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise MultipartError("expected multipart/form-data with a boundary")
    return boundary


async def events(body: AsyncIterator[bytes], boundary: bytes) -> AsyncIterator[Event]:
    """Parse as the body arrives; yields PartStart, then PartData chunks, then PartEnd for each part."""
    collector = _Collector()
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
    async for chunk in body:
        if not chunk:
            continue
        try:
            parser.write(chunk)
        except MultipartParseError as exc:
            raise MultipartError(str(exc)) from None
        batch, collector.events = collector.events, []
        for event in batch:
            yield event
    try:
        parser.finalize()
    except MultipartParseError as exc:
        raise MultipartError(str(exc)) from None
    for event in collector.events:
        yield event
