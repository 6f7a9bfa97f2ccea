from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from otel_cost.store import Store, open_store

from .helpers import HookServer, RunningServer

# Copied from ../shared/fixtures/otlp: real payloads recorded from third-party instrumentation.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "otlp"


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # chDB opens one store path per process: every test shares it, each in its own database.
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def store_url(chdb_path: Path) -> str:
    return f"chdb:{chdb_path}?database=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def make_server(store_url: str) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def make(
        overrides: dict[str, Any] | None = None, url: str | None = None, clock: Callable[[], datetime] | None = None
    ) -> RunningServer:
        running = RunningServer(url or store_url, overrides, clock)
        started.append(running)
        return running

    yield make
    for running in reversed(started):
        running.close()


@pytest.fixture
def server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server()


@pytest.fixture
def hooks() -> Iterator[Callable[..., HookServer]]:
    """Real HTTP servers on loopback that record what sinks and gateways POST to them."""
    started: list[HookServer] = []

    def make(**options: Any) -> HookServer:
        hook = HookServer(**options)
        started.append(hook)
        return hook

    yield make
    for hook in started:
        hook.close()
