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


@pytest.fixture(scope="session")
def janitor(chdb_path: Path) -> Iterator[Store]:
    """The session's store on the `default` database: it drops what each test created."""
    opened = open_store(f"chdb:{chdb_path}?database=default", migrate=False)
    yield opened
    opened.close()


@pytest.fixture
def store_url(chdb_path: Path, janitor: Store) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield f"chdb:{chdb_path}?database={name}"
    # Every database the test made (its own, and any named after it) is dropped afterwards: the engine
    # keeps background work scheduled for every database it holds, so a session that kept hundreds made
    # each later server start take seconds instead of a fifth of one.
    for (database,) in janitor.query(f"SELECT name FROM system.databases WHERE endsWith(name, '{name}')").rows:
        janitor.execute(f"DROP DATABASE IF EXISTS {database} SYNC")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def make_server(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def make(
        overrides: dict[str, Any] | None = None, url: str | None = None, clock: Callable[[], datetime] | None = None
    ) -> RunningServer:
        store = dict((overrides or {}).get("store", {}))
        if "spool_dir" not in store and any(not running.closed for running in started):
            # Two servers on one store at once (only tests do that): each owns a spool.
            store["spool_dir"] = str(tmp_path_factory.mktemp("spool"))
            overrides = {**(overrides or {}), "store": store}
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
