"""bench/caps.py end to end, small: its JSON has the headline keys, every acknowledged call is stored at the
cost it assumed, and it leaves nothing behind (server, helper processes, temp store), also when stopped
by SIGTERM half-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "caps.py"
FREE_PORTS = ["--grpc-port", "0", "--http-port", "0", "--api-port", "0"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_nothing_left(result: dict[str, Any]) -> None:
    assert not Path(result["store_dir"]).exists()
    for name, pid in result["pids"].items():
        assert not alive(pid), f"the {name} process ({pid}) is still running"


def test_a_small_run_reports_the_headline_and_cleans_up(tmp_path: Path) -> None:
    argv = [sys.executable, str(SCRIPT), "--trials", "2", "--warmup-trials", "0", "--calls-to-cross", "4"]
    argv += ["--rate", "25", "--pause", "0.2", "--save-dir", str(tmp_path), *FREE_PORTS]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1  # one JSON object, nothing else on stdout
    result = json.loads(lines[0])
    assert result["ok"] and result["errors"] == []
    assert list(result)[:4] == ["p50_seconds", "p99_seconds", "overspend_usd", "request_rate"]
    assert result["request_rate"] == 25
    assert result["trials"] == 2 and len(result["trial_seconds"]) == 2
    assert result["p50_seconds"] <= result["p99_seconds"] == round(max(result["trial_seconds"]), 3)
    assert result["overspend_usd"] >= 0
    assert result["enforcer_interval_seconds"] == 1.0  # the server's default: the config sets budgets only
    assert result["budget"]["limit_usd"] == "0.0525"  # 3.5 calls of 0.015 USD: the 4th crosses
    stored = result["stored"]
    assert stored["rows"] == stored["billable"] == result["calls_acknowledged"] == result["calls_sent"]
    assert stored["min_cost"] == stored["max_cost"] == "0.015"
    for outcome in result["trials_detail"]:
        assert outcome["calls"] >= 4 and outcome["failed_calls"] == 0
    assert [json.loads(path.read_text()) for path in tmp_path.glob("caps-*.json")] == [result]
    assert_nothing_left(result)


def test_sigterm_half_way_stops_everything_and_still_reports() -> None:
    argv = [sys.executable, str(SCRIPT), "--trials", "50", "--warmup-trials", "0", "--save-dir", "", *FREE_PORTS]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 180
        for line in process.stderr:  # wait until the trials run: server and helpers all started
            if "trial-1:" in line or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1
    result = json.loads(stdout)
    assert not result["ok"] and "interrupted (SIGTERM)" in result["errors"]
    assert_nothing_left(result)
