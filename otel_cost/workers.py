"""Where the pipeline runs: in the receiving process, or in worker processes on the other cores.

Decoding, normalizing, pricing and attributing a span is pure Python and holds the GIL, so one
process tops out at one core. With `receiver.workers = N` each export's bytes go to one of N worker
processes (started with spawn: the parent runs chDB threads, so it must not fork) and come back as
finished wire lines plus the span keys the receiver needs to settle duplicates. With 0 the pipeline
runs inline, in the event loop: the same code, no process boundary (tests, one-core machines).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .attribution import Attributor
from .config import AttributionConfig, OutcomesConfig, PriceOverride
from .errors import OverloadedError
from .forward.enrich import ForwardOptions
from .pipeline import Pipeline, ProcessedExport
from .pricing import PriceBook
from .receiver.codec import PROTOBUF, decode_request
from .semconv.outcomes import OutcomeReader

__all__ = ["PipelinePool", "process_payload"]

logger = logging.getLogger(__name__)

_pipeline: Pipeline | None = None  # one per process
_exports = 0
#: A worker collects garbage itself, every this many exports (see `_initialize`).
_COLLECT_EVERY = 64


def _initialize(
    overrides: Sequence[PriceOverride] = (),
    attribution: AttributionConfig | None = None,
    outcomes: OutcomesConfig | None = None,
    forward: ForwardOptions | None = None,
) -> None:
    global _pipeline
    _pipeline = Pipeline(PriceBook(overrides), Attributor(attribution), OutcomeReader(outcomes), forward)


def _worker_initialize(
    overrides: Sequence[PriceOverride] = (),
    attribution: AttributionConfig | None = None,
    outcomes: OutcomesConfig | None = None,
    forward: ForwardOptions | None = None,
) -> None:
    """In a worker process: the pipeline allocates ~30 short-lived containers per span and no cycles,
    while the price catalog is hundreds of thousands of long-lived objects. Python's automatic
    collections would rescan them over and over (measured: a quarter of the worker's time), so the
    worker freezes what exists after start-up and collects on its own schedule instead."""
    _die_with_parent()
    _initialize(overrides, attribution, outcomes, forward)
    gc.freeze()
    gc.disable()


def _die_with_parent() -> None:
    """A server killed with SIGKILL cannot stop its workers, and an orphan would hold memory and CPU:
    a thread exits the worker once it has been re-parented. (Not PR_SET_PDEATHSIG: that fires when
    the parent's *thread* that spawned the worker ends, and any thread may spawn one.)"""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="otel-cost-parent-watch", daemon=True).start()


def process_payload(body: bytes, kind: str, pipeline: Pipeline | None = None) -> ProcessedExport:
    """Decode one export (protobuf or JSON) and run the pipeline over it (this process's, unless
    given). Raises DecodeError."""
    global _exports
    if pipeline is None:
        if _pipeline is None:
            _initialize()
        pipeline = _pipeline
    assert pipeline is not None
    try:
        request = decode_request(body, kind)
        processed = pipeline.process(request)
        if processed.forward_as_received and kind != PROTOBUF:
            processed.forward = request.SerializeToString()  # forwarded as protobuf, whatever came in
            processed.forward_as_received = False
        return processed
    finally:
        _exports += 1
        if not gc.isenabled() and _exports % _COLLECT_EVERY == 0:
            gc.collect()


def _warm_up() -> None:
    assert _pipeline is not None  # the pool's initializer built it


class PipelinePool:
    def __init__(
        self,
        workers: int,
        overrides: Sequence[PriceOverride] = (),
        attribution: AttributionConfig | None = None,
        outcomes: OutcomesConfig | None = None,
        forward: ForwardOptions | None = None,
    ) -> None:
        self.workers = workers
        self.overrides = list(overrides)
        self.attribution = attribution
        self.outcomes = outcomes
        self.forward = forward
        self._inline: Pipeline | None = None  # workers == 0: this pool's own pipeline, in the event loop
        self._executor: ProcessPoolExecutor | None = None
        self.pids: list[int] = []
        if workers:
            self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_initialize,
            initargs=(self.overrides, self.attribution, self.outcomes, self.forward),
        )

    def _pipeline(self) -> Pipeline:
        return Pipeline(
            PriceBook(self.overrides), Attributor(self.attribution), OutcomeReader(self.outcomes), self.forward
        )

    async def start(self) -> None:
        """Start every worker now (imports and price catalog), not on the first export."""
        if self._executor is None:
            self._inline = self._pipeline()
            return
        loop = asyncio.get_running_loop()
        # The pool starts its processes on the first submissions; warm-ups make them import now.
        await asyncio.gather(*(loop.run_in_executor(self._executor, _warm_up) for _ in range(self.workers)))
        self._refresh_pids()

    def _refresh_pids(self) -> None:
        # The pool names its processes only privately; their pids serve the memory metrics alone.
        processes = getattr(self._executor, "_processes", None) or {}
        self.pids = sorted(process.pid for process in processes.values())

    async def process(self, body: bytes, kind: str) -> ProcessedExport:
        if self._executor is None:
            if self._inline is None:
                self._inline = self._pipeline()
            return process_payload(body, kind, self._inline)
        executor = self._executor
        try:
            processed = await asyncio.get_running_loop().run_in_executor(executor, process_payload, body, kind)
        except BrokenProcessPool as exc:
            if self._executor is executor:  # the first of the exports that were in flight replaces the pool
                logger.error("a pipeline worker died; starting a new pool")
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
                self.pids = []
            raise OverloadedError("a pipeline worker died while processing this export", retry_after_seconds=1) from exc
        if not self.pids:
            self._refresh_pids()
        return processed

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
