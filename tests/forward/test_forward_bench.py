"""bench/forward.py, short (--quick): three real `otel-cost serve` processes, real OTLP/gRPC traffic,
a real downstream that goes away and comes back. Ingestion with the downstream down is measured
against ingestion with it up and without forwarding, in the same run; everything queued during the
outage is delivered once, and the cap state follows the spend throughout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent.parent / "bench" / "forward.py"


def test_an_outage_does_not_slow_ingestion_and_the_backlog_is_delivered_on_return() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--spans", "20480"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1])
    assert done.returncode == 0, result
    assert result["stored_during_outage"] == 20480
    assert result["delivered"] == result["expected"] and result["duplicates"] == 0
    assert result["forward_metrics"]["dropped"] == 0 and result["forward_metrics"]["retries"] >= 1
    assert result["caps_follow_spend"]
    # A dead downstream costs ingestion nothing beyond what forwarding costs with it alive (on this
    # noisy 2-core machine the same phase varies by about 20% from run to run).
    phases = result["phases"]
    assert phases["down"]["spans_per_second"] >= 0.7 * phases["up"]["spans_per_second"], result
