"""The etcd watch stream's reader thread (kv._Stream) when its response fails under it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from xmasq_driver.control import kv
from xmasq_driver.errors import BackendError


class _Response:
    """A watch response whose read fails, as http.client's does once the response is closed."""

    def __init__(self, failure: Exception) -> None:
        self.reading, self.closed, self.failure = threading.Event(), threading.Event(), failure

    def iter_lines(self) -> Any:
        self.reading.set()
        self.closed.wait(5)
        raise self.failure
        yield b""  # a generator, as requests' is

    def close(self) -> None:
        self.closed.set()


class _KV:
    def __init__(self, response: _Response) -> None:
        self.response = response

    def _open_watch(self, prefix: str, revision: int) -> _Response:
        return self.response


def _died(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    deaths: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: deaths.append(args.exc_value))
    return deaths


def test_a_stream_closed_under_its_reader_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    deaths = _died(monkeypatch)
    response = _Response(AttributeError("'NoneType' object has no attribute 'read'"))
    stream = kv._Stream(_KV(response), "/xmasq/", 1)  # type: ignore[arg-type]
    assert response.reading.wait(5)
    stream.close()
    for t in threading.enumerate():
        if t.name == "etcd-watch":
            t.join(5)
    assert deaths == []


def test_a_stream_that_breaks_while_open_is_reported_to_its_taker(monkeypatch: pytest.MonkeyPatch) -> None:
    deaths = _died(monkeypatch)
    response = _Response(ValueError("Expecting value: line 1 column 1 (char 0)"))
    stream = kv._Stream(_KV(response), "/xmasq/", 1)  # type: ignore[arg-type]
    assert response.reading.wait(5)
    response.closed.set()  # the read fails, the stream itself still open
    with pytest.raises(BackendError, match="etcd watch failed: Expecting value"):
        stream.take(5)
    assert deaths == []
