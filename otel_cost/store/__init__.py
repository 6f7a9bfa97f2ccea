"""Stage 4: the ClickHouse store. `requests` rows plus materialized burn-rate rollups."""

from __future__ import annotations

from .base import QueryResult, Store
from .url import DEFAULT_STORE_URL, StoreURL, parse_store_url
from .writer import BatchWriter

__all__ = [
    "DEFAULT_STORE_URL",
    "BatchWriter",
    "QueryResult",
    "Store",
    "StoreURL",
    "open_store",
    "parse_store_url",
]


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the store at `url`: `chdb:PATH` or `clickhouse[s]://...`."""
    parsed = parse_store_url(url)
    store: Store
    if parsed.kind == "chdb":
        from .embedded import EmbeddedStore

        store = EmbeddedStore(parsed)
    else:
        from .server import ServerStore

        store = ServerStore(parsed)
    if migrate:
        try:
            store.migrate()
        except Exception:
            store.close()
            raise
    return store
