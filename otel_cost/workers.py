"""Where the pipeline runs: in the receiving process, or in worker processes on the other cores.

Decoding, normalizing, pricing and attributing a span is pure Python and holds the GIL, so one
process tops out at one core. With `receiver.workers = N` each export's bytes go to one of N worker
processes (started with spawn: the parent runs chDB threads, so it must not fork) and come back as
finished wire lines plus the span keys the receiver needs to settle duplicates. With 0 the pipeline
runs inline, in the event loop: the same code, no process boundary (tests, one-core machines).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .attribution import Attributor
from .errors import OverloadedError
from .pipeline import Pipeline, ProcessedExport
from .pricing import PriceBook
from .receiver.codec import decode_request

__all__ = ["PipelinePool", "process_payload"]

logger = logging.getLogger(__name__)

_pipeline: Pipeline | None = None  # one per process


def _initialize() -> None:
    global _pipeline
    _pipeline = Pipeline(PriceBook(), Attributor())


def process_payload(body: bytes, kind: str) -> ProcessedExport:
    """Decode one export (protobuf or JSON) and run the pipeline over it. Raises DecodeError."""
    if _pipeline is None:
        _initialize()
    assert _pipeline is not None
    return _pipeline.process(decode_request(body, kind))


def _warm_up() -> int:
    if _pipeline is None:
        _initialize()
    return os.getpid()


class PipelinePool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self.pids: list[int] = []
        if workers:
            self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_initialize
        )

    async def start(self) -> None:
        """Start every worker now (imports and price catalog), not on the first export."""
        if self._executor is None:
            _initialize()
            return
        loop = asyncio.get_running_loop()
        # One warm-up per worker: each blocks briefly, so the pool spreads them over its processes.
        self.pids = sorted(
            set(
                await asyncio.gather(*(loop.run_in_executor(self._executor, _warm_up) for _ in range(self.workers * 2)))
            )
        )

    async def process(self, body: bytes, kind: str) -> ProcessedExport:
        if self._executor is None:
            return process_payload(body, kind)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, process_payload, body, kind)
        except BrokenProcessPool as exc:
            logger.error("a pipeline worker died; starting a new pool")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            raise OverloadedError("a pipeline worker died while processing this export", retry_after_seconds=1) from exc

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
