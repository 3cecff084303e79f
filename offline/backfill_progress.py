"""The progress of a backfill run on a terminal: a bar over its chunks, the current chunk's
step, and each finished chunk's events per second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.domain.backfills import PlannedChunk, iso
from offline.backfill import ChunkProgress, ChunkResult


class _ChunkBar:
    def __init__(self, bar: Progress, console: Console) -> None:
        self.bar, self.console = bar, console
        self.task = bar.add_task("", total=None, step="", rate="")
        self.events = 0
        self.started = time.monotonic()

    def chunk_started(self, chunk: PlannedChunk) -> None:
        self.bar.update(self.task, description=f"{iso(chunk.start_ms)}", step="starting")

    def stage(self, text: str) -> None:
        self.bar.update(self.task, step=text)

    def chunk_finished(self, result: ChunkResult) -> None:
        self.events += result.events_read
        overall = self.events / max(time.monotonic() - self.started, 1e-9)
        self.bar.update(self.task, advance=1, step="", rate=f"{overall:,.0f} events/s")
        done = "committed" if result.ran else "already in the table"
        self.console.print(
            f"{iso(result.chunk[0])} .. {iso(result.chunk[1])}: {done}, "
            f"{result.events_read:,} events → {result.rows:,} rows in {result.seconds:.1f} s "
            f"({result.events_read / max(result.seconds, 1e-9):,.0f} events/s), "
            f"snapshot {result.snapshot_id}")


@contextmanager
def chunk_bar(chunks: int) -> Iterator[ChunkProgress]:
    """A bar on stderr (hidden when not a terminal; the per-chunk lines are printed always)."""
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[step]}"), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), console=console,
                  disable=not console.is_terminal) as bar:
        progress = _ChunkBar(bar, console)
        bar.update(progress.task, total=chunks)
        yield progress
