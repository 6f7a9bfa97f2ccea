"""Store URLs: `chdb:PATH` (embedded, the default), `clickhouse://user:pass@host:8123/db`,
`clickhouses://...` (TLS)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import StoreURLError

__all__ = ["DEFAULT_DATABASE", "DEFAULT_STORE_URL", "StoreURL", "parse_store_url"]

DEFAULT_STORE_URL = "chdb:./otel-cost-data"
DEFAULT_DATABASE = "otel_cost"


@dataclass(frozen=True)
class StoreURL:
    kind: str  # "chdb" or "clickhouse"
    path: Path | None = None  # chdb
    host: str = ""
    port: int = 0
    username: str = "default"
    password: str = ""
    database: str = DEFAULT_DATABASE
    secure: bool = False

    def redacted(self) -> str:
        """The URL without its password, for logs and messages."""
        if self.kind == "chdb":
            suffix = "" if self.database == DEFAULT_DATABASE else f"?database={self.database}"
            return f"chdb:{self.path}{suffix}"
        scheme = "clickhouses" if self.secure else "clickhouse"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.database}"


def _check_database(url: str, database: str) -> None:
    if not database or not database.replace("_", "").isalnum() or not database.isascii():
        raise StoreURLError(f"store URL {url!r}: database name {database!r} must be ASCII letters, digits and _")


def parse_store_url(url: str) -> StoreURL:
    if not url:
        raise StoreURLError("store URL is empty (expected chdb:PATH or clickhouse://user:pass@host:8123/db)")
    if url.startswith("chdb:"):
        path, _, query = url[len("chdb:") :].partition("?")
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise StoreURLError(f"store URL {url!r} has no path (expected e.g. chdb:./otel-cost-data)")
        database = DEFAULT_DATABASE
        for pair in filter(None, query.split("&")):
            key, _, value = pair.partition("=")
            if key != "database":
                raise StoreURLError(f"store URL {url!r}: unknown option {key!r} (only database=NAME)")
            database = value
        _check_database(url, database)
        return StoreURL(kind="chdb", path=Path(path).expanduser(), database=database)
    parts = urlsplit(url)
    if parts.scheme not in ("clickhouse", "clickhouses"):
        raise StoreURLError(
            f"store URL {url!r} has an unknown scheme {parts.scheme!r} "
            "(expected chdb:PATH, clickhouse://user:pass@host:8123/db or clickhouses://...)"
        )
    if not parts.hostname:
        raise StoreURLError(f"store URL {url!r} has no host")
    secure = parts.scheme == "clickhouses"
    try:
        port = parts.port or (8443 if secure else 8123)
    except ValueError as exc:
        raise StoreURLError(f"store URL {url!r} has an invalid port") from exc
    database = parts.path.strip("/") or DEFAULT_DATABASE
    _check_database(url, database)
    return StoreURL(
        kind="clickhouse",
        host=parts.hostname,
        port=port,
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=database,
        secure=secure,
    )
