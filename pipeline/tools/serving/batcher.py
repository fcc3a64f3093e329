"""The batching queue: requests that arrive together are decoded together, in one padded batch.

One worker thread owns the model. It takes the first waiting request, gathers whatever else arrives within
`wait_s` (up to `max_batch` rows), decodes that batch to the end, then starts again; requests that arrive during
a batch wait for the next one. This is static batching: simple, and on a CPU the batch's forward passes cost little
more than one row's, so concurrent clients share the time instead of queueing for it."""

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
    batches: int = 0
    largest_batch: int = 0
    # requests that shared their batch with at least one other
    batched_requests: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def record(self, size: int) -> None:
        self.requests += size
        self.batches += 1
        self.largest_batch = max(self.largest_batch, size)
        self.batched_requests += size if size > 1 else 0
        self.sizes[size] = self.sizes.get(size, 0) + 1


class Batcher:
    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 8, wait_s: float = 0.02) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.wait_s = max_batch, wait_s
        self.stats = BatchStats()
        self._queue: queue.Queue[Row | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._worker.start()

    def submit(self, row: Row) -> None:
        self._queue.put(row)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _run(self) -> None:
        while (batch := self._gather()) is not None:
            self.stats.record(len(batch))
            log.info("batch of %d request(s)", len(batch))
            try:
                decode_batch(self.model, self.tokenizer, batch)
            except Exception as err:  # a failed batch answers its requests with the error and the server goes on
                log.exception("generation failed")
                for row in batch:
                    row.emit(Failed(f"generation failed: {type(err).__name__}: {err}"))

    def _gather(self) -> list[Row] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                row = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if row is None:
                self._queue.put(None)  # close() after this batch
                break
            batch.append(row)
        return batch
