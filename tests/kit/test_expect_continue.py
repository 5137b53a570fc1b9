"""An early answer to `Expect: 100-continue` closes the connection; an answer after reading the body does not."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from pockity.kit.expect_continue import ExpectContinueGuard


def _scope(expect: bool) -> Scope:
    headers = [(b"content-length", b"5")] + ([(b"expect", b"100-continue")] if expect else [])
    return {"type": "http", "method": "PUT", "path": "/", "headers": headers}


async def _run(expect: bool, read_body: bool) -> list[tuple[bytes, bytes]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if read_body:
            await receive()
        await send({"type": "http.response.start", "status": 403, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"hello", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await ExpectContinueGuard(app)(_scope(expect), receive, send)
    return list(sent[0]["headers"])


async def test_an_early_answer_to_expect_closes_the_connection() -> None:
    assert await _run(expect=True, read_body=False) == [(b"x-a", b"1"), (b"connection", b"close")]


async def test_answers_after_the_body_or_without_expect_keep_it() -> None:
    assert await _run(expect=True, read_body=True) == [(b"x-a", b"1")]
    assert await _run(expect=False, read_body=False) == [(b"x-a", b"1")]
