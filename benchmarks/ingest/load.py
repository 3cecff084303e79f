"""A cheap HTTP/1.1 load generator: N keep-alive connections, each sending prepared requests
one after the other (closed loop), on raw asyncio streams under uvloop.

Every request's bytes are built before the run; a response is read by its
``Content-Length`` and its ``accepted`` count decoded.  A request counts when its response
arrives inside the measuring window (after the warm-up), whenever it was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec
import uvloop

from benchmarks.ingest.support import CpuSnapshot


@dataclass(frozen=True)
class Prepared:
    """One request's bytes, and how many events it carries."""

    data: bytes
    events: int


def post(host: str, path: str, body: bytes, events: int,
         content_type: str = "application/json") -> Prepared:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return Prepared(head + body, events)


def get(host: str, path: str) -> Prepared:
    return Prepared(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), 0)


class _Answer(msgspec.Struct):
    accepted: int = 0


_answers = msgspec.json.Decoder(_Answer)


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    requests: int = 0
    events: int = 0
    """Events sent in the requests answered inside the window."""
    accepted: int = 0
    latencies: list[float] = field(default_factory=list)
    """Seconds from sending a request to reading its whole response."""
    statuses: Counter[int] = field(default_factory=Counter)
    client_cpu_s: float = 0.0
    before: CpuSnapshot | None = None
    after: CpuSnapshot | None = None


@dataclass
class _Window:
    result: LoadResult
    measuring: bool = False
    stop: bool = False


def run(host: str, port: int, requests: Sequence[Prepared], *, concurrency: int,
        warmup_s: float, seconds: float, snapshot: Callable[[], CpuSnapshot]) -> LoadResult:
    """Drive the server for ``warmup_s`` + ``seconds`` and return the measured window."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_drive(host, port, requests, concurrency=concurrency,
                                 warmup_s=warmup_s, seconds=seconds, snapshot=snapshot))


async def _drive(host: str, port: int, requests: Sequence[Prepared], *, concurrency: int,
                 warmup_s: float, seconds: float, snapshot: Callable[[], CpuSnapshot],
                 ) -> LoadResult:
    window = _Window(LoadResult(concurrency, seconds))
    connections = [await asyncio.open_connection(host, port) for _ in range(concurrency)]
    tasks = [asyncio.create_task(_connection(reader, writer, requests,
                                             n * len(requests) // concurrency, window))
             for n, (reader, writer) in enumerate(connections)]
    await asyncio.sleep(warmup_s)
    window.result.before, cpu_before = snapshot(), time.process_time()
    window.measuring = True
    await asyncio.sleep(seconds)
    window.measuring = False
    window.result.after = snapshot()
    window.result.client_cpu_s = time.process_time() - cpu_before
    window.result.seconds = window.result.after.at - window.result.before.at
    window.stop = True
    await asyncio.gather(*tasks)
    for _, writer in connections:
        writer.close()
    return window.result


async def _connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      requests: Sequence[Prepared], start: int, window: _Window) -> None:
    count, n = len(requests), start
    result = window.result
    while not window.stop:
        request = requests[n % count]
        n += 1
        started = time.perf_counter()
        writer.write(request.data)
        head = await reader.readuntil(b"\r\n\r\n")
        length = _content_length(head)
        body = await reader.readexactly(length) if length else b""
        if not window.measuring:
            continue
        result.latencies.append(time.perf_counter() - started)
        status = int(head[9:12])
        result.requests += 1
        result.statuses[status] += 1
        result.events += request.events
        if request.events and status in (200, 207, 422):
            result.accepted += _answers.decode(body).accepted


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        raise RuntimeError(f"a response without Content-Length: {head!r}")
    start = at + len(b"\r\ncontent-length:")
    return int(head[start:head.find(b"\r\n", start)])
