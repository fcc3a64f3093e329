"""The batching queue: requests that arrive together are decoded together, in one padded batch.

One worker thread owns the model. It takes the first waiting request, gathers whatever else arrives within
`wait_s` (up to `max_batch` rows), decodes that batch to the end, then starts again; requests that arrive during
a batch wait for the next one. This is static batching: simple, and on a CPU the batch's forward passes cost little
more than one row's, so concurrent clients share the time instead of queueing for it.

A request is a group of rows (its n choices, or several prompts on /v1/completions) that stays in one batch, so
n samples of one prompt are decoded together; a group larger than max_batch is cut into max_batch-sized pieces."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.tools.serving.decode import Failed, Row, decode_batch

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """Counters for /stats: how requests were grouped."""

    requests: int = 0
    # sequences decoded: a request with n=2 or two prompts is two rows
    rows: int = 0
    batches: int = 0
    largest_batch: int = 0
    # requests that shared their batch with at least one other
    batched_requests: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def record(self, requests: int, rows: int) -> None:
        self.requests += requests
        self.rows += rows
        self.batches += 1
        self.largest_batch = max(self.largest_batch, rows)
        self.batched_requests += requests if requests > 1 else 0
        self.sizes[rows] = self.sizes.get(rows, 0) + 1


class Batcher:
    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 8, wait_s: float = 0.02) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.wait_s = max_batch, wait_s
        self.stats = BatchStats()
        self._queue: queue.Queue[list[Row] | None] = queue.Queue()
        # a group that did not fit in the batch being gathered: it opens the next one
        self._held: list[Row] | None = None
        self._worker = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._worker.start()

    def submit(self, rows: list[Row]) -> None:
        for start in range(0, len(rows), self.max_batch):
            self._queue.put(rows[start:start + self.max_batch])

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _run(self) -> None:
        while (gathered := self._gather()) is not None:
            batch = [row for group in gathered for row in group]
            self.stats.record(len(gathered), len(batch))
            log.info("batch of %d request(s)%s", len(gathered),
                     f", {len(batch)} rows" if len(batch) != len(gathered) else "")
            try:
                decode_batch(self.model, self.tokenizer, batch)
            except Exception as err:  # a failed batch answers its requests with the error and the server goes on
                log.exception("generation failed")
                for row in batch:
                    row.emit(Failed(f"generation failed: {type(err).__name__}: {err}"))

    def _gather(self) -> list[list[Row]] | None:
        first, self._held = self._held or self._queue.get(), None
        if first is None:
            return None
        groups, size = [first], len(first)
        deadline = time.monotonic() + self.wait_s
        while size < self.max_batch:
            try:
                group = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if group is None:
                self._queue.put(None)  # close() after this batch
                break
            if size + len(group) > self.max_batch:
                self._held = group
                break
            groups.append(group)
            size += len(group)
        return groups
