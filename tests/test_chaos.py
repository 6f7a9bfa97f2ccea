"""bench/chaos.py's fault scenarios, short (--quick), each in its own processes: kill -9 at four crash
points, a store that goes away, a store that stalls, a spool that fills, the store's disk filling up
(chDB's streaming insert reported success there and stored nothing), and overload. Every
acknowledged span is stored exactly once, the rollups equal the raw rows, the cap state and the
alert ledger survive a crash, and memory stays under the configured bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import load_script

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "chaos.py"
SCENARIOS = [
    "crash_receive",
    "crash_journaled",
    "crash_insert",
    "crash_inserted",
    "store_outage",
    "store_stall",
    "spool_full",
    "disk_full",
    "overload",
]


def run(scenario: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--scenario", scenario],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    (result,) = json.loads(lines[-1])["scenarios"]
    assert "error" not in result, f"{result['error']}\n{done.stderr[-3000:]}"
    if "skipped" in result:
        pytest.skip(result["skipped"])  # disk_full mounts a tmpfs: root only
    assert done.returncode == 0, (result, done.stderr[-3000:])
    return dict(result)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_nothing_acknowledged_is_lost_or_doubled(scenario: str) -> None:
    result = run(scenario)
    assert set(result) >= {"name", "acknowledged", "stored", "duplicated", "lost", "recovery_seconds", "peak_rss_mb"}
    assert result["acknowledged"] >= 1000
    assert (result["lost"], result["duplicated"]) == (0, 0)
    assert result["stored"] >= result["acknowledged"]  # spans whose ack the crash cut off may be stored too
    assert result["rollups_match"]  # no partial batch: the minute and hour rollups equal the raw rows
    if scenario.startswith("crash_"):
        assert result["replayed_batches"] >= 0
        assert result["cap_action_after_restart"] == "block"  # the budget blocked before the kill
        assert result["alerts_fired"] >= 1 and result["alerts_fired_twice"] == 0
        assert result["orphaned_workers"] == 0
    if scenario == "crash_journaled":
        assert result["replayed_batches"] == 1  # the journaled batch was inserted at start-up
    if scenario in ("store_outage", "store_stall", "disk_full"):
        assert result["spooled_batches"] >= 1 and result["drained_batches"] == result["spooled_batches"]
    if scenario == "spool_full":
        assert result["refused_batches"] >= 1  # pushed back, retried by the exporters, then stored
    if scenario == "overload":
        assert result["pushbacks"] >= 1 and result["client_timeouts"] == 0
        assert result["throughput_ratio"] >= 0.5  # near capacity; short phases on a busy machine are noisy
        assert result["peak_rss_mb"] <= result["memory_bound_mb"]


@pytest.mark.parametrize("taken", [0, 4096, 300_000])
def test_the_ballast_fills_a_disk_whatever_space_is_left(tmp_path: Path, taken: int) -> None:
    """In CI the store's files left a free space that was not a whole number of the ballast's 1 MiB
    chunks; a buffered ballast file kept the rest and raised ENOSPC again when closed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=False).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        (disk / "taken").write_bytes(b"x" * taken)
        load_script(SCRIPT, "otel_cost_bench_chaos").fill(disk / "ballast")
        assert os.statvfs(disk).f_bavail == 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
