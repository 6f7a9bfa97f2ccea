"""An insert into a nearly full disk is refused before anything is written, not half-written.

chdb 4.4.0 on a full disk could commit a part whose marks file was empty; every read of the table
failed with CORRUPTED_DATA after that (seen once in `bench/chaos.py` disk_full). The embedded store
asks the engine to refuse inserts below `MIN_FREE_DISK_BYTES` free: a retryable StoreUnavailableError,
so the writer spools the batch and retries once there is room."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_cost.attribution import Attributor
from otel_cost.errors import StoreUnavailableError
from otel_cost.pipeline import Pipeline
from otel_cost.pricing import PriceBook
from otel_cost.store import open_store
from otel_cost.store.embedded import MIN_FREE_DISK_BYTES
from tests.helpers import chat_attributes, make_request, make_span


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(disk)]
    mounted = subprocess.run(mount, capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def probe(disk: Path) -> dict[str, object]:
    """Run in its own process (chDB opens one store path per process; the suite's is open already)."""
    store = open_store(f"chdb:{disk / 'store'}")
    pipeline = Pipeline(PriceBook(), Attributor())

    def batch() -> bytes:
        return pipeline.process(make_request([make_span(chat_attributes()) for _ in range(200)])).data

    def count(sql: str) -> int:
        return int(store.query(sql).scalar())

    try:
        store.insert_batch(batch(), "first")
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * (_free(disk) - MIN_FREE_DISK_BYTES // 2))
        refusal = ""
        try:
            store.insert_batch(batch(), "second")
        except StoreUnavailableError as exc:
            refusal = str(exc)
        while_full = count("SELECT count() FROM requests")
        ballast.unlink()
        store.insert_batch(batch(), "second")  # the same token, once there is room
        return {
            "refusal": refusal,
            "while_full": while_full,
            "after": count("SELECT count() FROM requests"),
            "rollup_calls": count("SELECT sum(calls) FROM spend_minute"),
        }
    finally:
        store.close()


def test_an_insert_below_the_free_space_threshold_is_refused_retryably_and_writes_nothing(small_disk: Path) -> None:
    done = subprocess.run(
        [sys.executable, __file__, str(small_disk)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "enough free space" in result["refusal"]
    assert result["while_full"] == 200  # nothing of the refused batch was written
    assert result["after"] == result["rollup_calls"] == 400  # stored once, rollups included


if __name__ == "__main__":
    print(json.dumps(probe(Path(sys.argv[1]))))
