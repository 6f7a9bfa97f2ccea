"""The spool: a write-ahead journal of batches on local disk, so an acknowledged export survives a
crash and a store outage.

Every batch is written here before its insert and removed after it. A crash mid-insert (the raw
table written, a rollup not yet) therefore leaves the batch in the spool, and replaying it with the
same deduplication token completes the rollups without doubling the raw rows: ClickHouse
deduplicates each table, views included, by that token (measured in
tests/test_crash_safety.py). While the store fails or stalls, batches stay here and their exports
are acknowledged from disk (the entry is fsynced first); they are inserted oldest first when the
store answers again. The spool is bounded (`store.spool_max_bytes`): once full, exports are refused
with a retryable status and the clients keep the data.

One file per batch, `<sequence>.batch`: a fixed header (magic, token, row count, lengths, CRC-32)
then the wire lines and the outcome lines. Files are written under a temporary name and renamed, so
a file with a final name is complete; a leftover temporary file belongs to a batch that was never
acknowledged and is deleted. A file whose checksum does not match is moved to `corrupt/`, logged
and counted, never inserted and never deleted; so is a line the store rejects as data
(`rejected/`), while the rest of its batch is stored.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import OverloadedError, StoreError

__all__ = ["Spool", "SpoolEntry", "SpoolFullError"]

logger = logging.getLogger(__name__)

_MAGIC = b"OTCSPL01"
_HEADER = struct.Struct("<8s32sIQQI")  # magic, token, rows, data length, outcomes length, crc32
_SUFFIX = ".batch"


class SpoolFullError(OverloadedError):
    """The spool cannot take the batch (size limit or disk): the export must be refused, retryably."""


@dataclass(frozen=True)
class SpoolEntry:
    sequence: int
    token: str
    rows: int
    size: int  # bytes on disk
    path: Path


class Spool:
    """The journal in `directory`, acknowledging at most `max_bytes` of batches from disk (0: never,
    exports are refused while the store is away). One process owns a directory (an advisory lock):
    two servers replaying the same batches would race."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.corrupt = 0
        self._lock = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_file = (directory / "lock").open("a+")
        except OSError as exc:
            raise StoreError(f"cannot use the spool directory {directory}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StoreError(
                    f"the spool directory {directory} is in use by another otel-cost process; give each "
                    "server its own store.spool_dir"
                ) from None
            raise
        self._entries: list[SpoolEntry] = []
        self._bytes = 0
        self._next = 1
        self._load()

    def _load(self) -> None:
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)  # never renamed: never acknowledged
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                sequence = int(path.stem)
                with path.open("rb") as handle:
                    header = handle.read(_HEADER.size)
                magic, token, rows, data_length, outcomes_length, _ = _HEADER.unpack(header)
                if magic != _MAGIC or path.stat().st_size != _HEADER.size + data_length + outcomes_length:
                    raise ValueError("bad header or length")
            except (ValueError, OSError, struct.error) as exc:
                self._quarantine(path, str(exc))
                continue
            entry = SpoolEntry(sequence, token.decode("ascii"), rows, path.stat().st_size, path)
            self._entries.append(entry)
            self._bytes += entry.size
            self._next = max(self._next, sequence + 1)
        if self._entries:
            logger.warning(
                "the spool at %s holds %d batches (%d rows) not yet confirmed in the store: they will be inserted",
                self.directory,
                len(self._entries),
                self.rows,
            )

    def _quarantine(self, path: Path, reason: str) -> None:
        corrupt = self.directory / "corrupt"
        corrupt.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            path.rename(corrupt / path.name)
        self.corrupt += 1
        logger.error("spool file %s is damaged (%s): moved to %s, not inserted", path.name, reason, corrupt)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes on disk."""
        return self._bytes

    @property
    def rows(self) -> int:
        return sum(entry.rows for entry in self._entries)

    def entries(self) -> list[SpoolEntry]:
        """Oldest first."""
        with self._lock:
            return list(self._entries)

    def oldest(self) -> SpoolEntry | None:
        with self._lock:
            return self._entries[0] if self._entries else None

    def append(self, token: str, rows: int, data: bytes, outcomes: bytes, *, sync: bool = False) -> SpoolEntry:
        """Journal one batch. SpoolFullError when the disk refuses it, or when other batches wait and it
        would pass `max_bytes` (the one batch being inserted is always journaled: that is what repairs
        a crash mid-insert). `sync` makes it durable against an OS crash too (an ack from disk rests
        on it); otherwise the page cache keeps it across a process crash, which the healthy path needs."""
        size = _HEADER.size + len(data) + len(outcomes)
        with self._lock:
            if self._entries:
                self._check_room(self._bytes + size)
            sequence = self._next
            self._next += 1
        token_bytes = token.encode("ascii")
        if len(token_bytes) != 32:
            raise ValueError("spool tokens are 32 hex characters")
        header = _HEADER.pack(
            _MAGIC, token_bytes, rows, len(data), len(outcomes), zlib.crc32(outcomes, zlib.crc32(data))
        )
        path = self.directory / f"{sequence:016d}{_SUFFIX}"
        temporary = path.with_suffix(".tmp")
        try:
            with temporary.open("wb") as handle:
                handle.write(header)
                handle.write(data)
                handle.write(outcomes)
                if sync:
                    handle.flush()
                    os.fsync(handle.fileno())
            temporary.rename(path)
            if sync:
                self._sync_directory()
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise SpoolFullError(
                f"cannot write to the spool at {self.directory}: {exc.strerror or exc}", retry_after_seconds=5
            ) from exc
        entry = SpoolEntry(sequence, token, rows, size, path)
        with self._lock:
            self._entries.append(entry)
            self._entries.sort(key=lambda known: known.sequence)
            self._bytes += size
        return entry

    def _check_room(self, total: int) -> None:
        if total > self.max_bytes:
            raise SpoolFullError(
                f"the spool is full ({self._bytes} bytes of store.spool_max_bytes={self.max_bytes} wait for the store)",
                retry_after_seconds=5,
            )

    def sync(self, entry: SpoolEntry) -> None:
        """Make an entry written without `sync` durable against an OS crash, before acknowledging it from
        disk: SpoolFullError when that would pass `max_bytes`."""
        with self._lock:
            self._check_room(self._bytes)
        try:
            with entry.path.open("rb+") as handle:
                os.fsync(handle.fileno())
            self._sync_directory()
        except OSError as exc:
            raise SpoolFullError(
                f"cannot sync the spool at {self.directory}: {exc.strerror or exc}", retry_after_seconds=5
            ) from exc

    def _sync_directory(self) -> None:
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def read(self, entry: SpoolEntry) -> tuple[bytes, bytes] | None:
        """(wire lines, outcome lines); None when the file is damaged (it is quarantined and dropped
        from the spool, loudly)."""
        try:
            blob = entry.path.read_bytes()
            magic, _, _, data_length, outcomes_length, checksum = _HEADER.unpack_from(blob)
            data = blob[_HEADER.size : _HEADER.size + data_length]
            outcomes = blob[_HEADER.size + data_length : _HEADER.size + data_length + outcomes_length]
            if magic != _MAGIC or zlib.crc32(outcomes, zlib.crc32(data)) != checksum:
                raise ValueError("checksum mismatch")
        except (OSError, ValueError, struct.error) as exc:
            self.quarantine(entry, str(exc))
            return None
        return data, outcomes

    def set_aside(self, line: bytes, token: str) -> Path:
        """Keep a line the store rejects, for a human (`rejected/`): never inserted, never deleted."""
        folder = self.directory / "rejected"
        folder.mkdir(exist_ok=True)
        path = folder / f"{token}.tsv"
        with path.open("ab") as handle:
            handle.write(line)
        return path

    def quarantine(self, entry: SpoolEntry, reason: str) -> None:
        """Move a batch that must not be inserted to `corrupt/` (kept for a human, counted, logged)."""
        self._quarantine(entry.path, reason)
        self._forget(entry)

    def remove(self, entry: SpoolEntry) -> None:
        """The batch is in the store. No fsync: should the unlink be lost, the replay is deduplicated."""
        entry.path.unlink(missing_ok=True)
        self._forget(entry)

    def _forget(self, entry: SpoolEntry) -> None:
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)
                self._bytes -= entry.size

    def close(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
