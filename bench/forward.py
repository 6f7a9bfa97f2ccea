"""Processor-mode benchmark: does forwarding, or a dead downstream, slow ingestion? One JSON object.

    .venv/bin/python bench/forward.py [--quick] [--spans N] [--outage-seconds S]

Three `otel-cost serve` processes on fresh stores, the same kind of traffic (bench/ingest.py's
payloads: 512 model-call spans per export, several exports in flight over OTLP/gRPC), measured end
to end (every export acknowledged) in one run:
- `off`: no forwarding. The ceiling the others are compared with.
- `up`: forwarding to a real OTLP/gRPC receiver on loopback (this process) that accepts everything.
- `down`: forwarding to an address where nothing listens (a downstream that is down): every attempt
  fails and is retried, with backoff, while the spans queue in memory. The receiver then starts on
  that port and everything queued is delivered. The outage lasts `--outage-seconds` (the traffic is
  sent at its start); `/v1/caps` is read during the outage to show the enforcer still follows
  the spend.

Keys: `spans_per_second` per phase and `ratio_up`, `ratio_down` (against `off`, the same run);
`delivered` and `duplicates` (span ids the downstream received, once each), `backlog_spans` (queued
when the downstream came back), `delivery_seconds` (from its return to the last span), the server's
forwarding counters, and `caps_follow_spend` (the cap state's spend equals the store's during the
outage). Exit status 1 when a span is missing downstream or in the store, or the caps lag.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent import futures
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import yaml
from ingest import build_payloads, count_run_rows, scrape_metrics, send_all, sql_scalar
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ROOT = Path(__file__).resolve().parent.parent
OTEL_COST = ROOT / ".venv" / "bin" / "otel-cost"


def log(message: str) -> None:
    print(f"forward: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Downstream:
    """A real OTLP/gRPC trace receiver that counts the span ids it receives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: set[bytes] = set()
        self.duplicates = 0
        self.last_at = 0.0
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    def start(self) -> None:
        downstream = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:  # noqa: N802
                ids = [
                    span.span_id
                    for resource_spans in request.resource_spans
                    for scope_spans in resource_spans.scope_spans
                    for span in scope_spans.spans
                ]
                with downstream._lock:
                    before = len(downstream.seen)
                    downstream.seen.update(ids)
                    downstream.duplicates += len(ids) - (len(downstream.seen) - before)
                    downstream.last_at = time.monotonic()
                return ExportTraceServiceResponse()

        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
        if not server.add_insecure_port(f"127.0.0.1:{self.port}"):
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port}")
        server.start()
        self._server = server

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()


class ServerProcess:
    def __init__(self, workdir: Path, name: str, forward_port: int | None) -> None:
        self.grpc = f"127.0.0.1:{free_port()}"
        self.api = f"http://127.0.0.1:{free_port()}"
        config: dict[str, Any] = {
            "receiver": {"grpc_endpoint": self.grpc, "http_endpoint": f"127.0.0.1:{free_port()}"},
            "api": {"endpoint": self.api.removeprefix("http://")},
            "store": {"url": f"chdb:{workdir / name}"},
            "budgets": [{"name": "everything", "period": "month", "limit": "1000000"}],
            "alerts": {"enabled": False},
        }
        if forward_port is not None:
            config["forward"] = {
                "endpoints": [
                    {"endpoint": f"http://127.0.0.1:{forward_port}", "name": "backend", "retry_max_seconds": 2}
                ]
            }
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = open(workdir / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(OTEL_COST), "serve", "--config", str(path)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"otel-cost serve exited ({self.process.returncode}); see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.api}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("otel-cost serve did not become ready in 120 s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def metric(values: dict[str, float], name: str, **labels: str) -> float:
    """The value of the first series of `name` with these labels (one endpoint here), else 0."""
    for series, value in values.items():
        base, _, rest = series.partition("{")
        if base == name and all(f'{key}="{wanted}"' in rest for key, wanted in labels.items()):
            return value
    return 0.0


def timed_send(server: ServerProcess, payloads: list[bytes], concurrency: int) -> tuple[float, int]:
    stats, started, ended = send_all(server.grpc, payloads, concurrency, timeout=60)
    if stats.failed:
        raise RuntimeError(f"{stats.failed} exports failed: {stats.errors[:3]}")
    return ended - started, stats.acknowledged


def caps_follow_spend(server: ServerProcess, timeout: float) -> bool:
    """The cap state's spend equals the store's (the enforcer kept polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = Decimal(str(sql_scalar(server.api, "SELECT toString(sum(cost)) FROM requests WHERE billable")))
        with urllib.request.urlopen(f"{server.api}/v1/caps", timeout=5) as response:
            caps = json.loads(response.read())["caps"]
        if caps and Decimal(caps[0]["spent"]) == stored and stored > 0:
            return True
        time.sleep(0.2)
    return False


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "forward", "spans": args.spans, "outage_seconds": args.outage_seconds}
    with tempfile.TemporaryDirectory(prefix="otel-cost-forward-") as scratch:
        workdir = Path(scratch)
        phases: dict[str, Any] = {}

        def payloads_for(phase: str) -> tuple[str, list[bytes]]:
            run_id = f"{phase}-{uuid.uuid4().hex[:8]}"
            return run_id, build_payloads(args.spans, run_id, seed=hash(phase) & 0xFFFF, spans_per_request=512)

        log("phase off: no forwarding")
        server = ServerProcess(workdir, "off", None)
        try:
            _, warmup = payloads_for("warmup-off")
            timed_send(server, warmup[: max(1, len(warmup) // 4)], args.concurrency)
            _, payloads = payloads_for("off")
            seconds, _ = timed_send(server, payloads, args.concurrency)
            phases["off"] = {"spans_per_second": round(args.spans / seconds)}
        finally:
            server.stop()

        port = free_port()
        downstream = Downstream(port)
        downstream.start()
        log("phase up: forwarding to a live downstream")
        server = ServerProcess(workdir, "forwarding", port)
        try:
            _, warmup = payloads_for("warmup-up")
            warm = warmup[: max(1, len(warmup) // 4)]
            timed_send(server, warm, args.concurrency)
            _, payloads = payloads_for("up")
            seconds, _ = timed_send(server, payloads, args.concurrency)
            phases["up"] = {"spans_per_second": round(args.spans / seconds)}
            expected = args.spans + _spans_in(warm)
            deadline = time.monotonic() + 60
            while downstream.count() < expected and time.monotonic() < deadline:
                time.sleep(0.05)
            phases["up"]["delivered"] = downstream.count()

            log("phase down: the downstream goes away")
            downstream.stop()
            outage_started = time.monotonic()
            run_id, payloads = payloads_for("down")
            seconds, _ = timed_send(server, payloads, args.concurrency)
            phases["down"] = {"spans_per_second": round(args.spans / seconds)}
            stored = count_run_rows(server.api, run_id)
            result["stored_during_outage"] = stored
            result["caps_follow_spend"] = caps_follow_spend(server, timeout=10)
            values = scrape_metrics(server.api)
            result["backlog_spans"] = args.spans
            result["queued_exports_during_outage"] = metric(values, "otel_cost_forward_queue_exports")
            result["retries_during_outage"] = metric(values, "otel_cost_forward_retries_total")
            remaining = args.outage_seconds - (time.monotonic() - outage_started)
            if remaining > 0:
                log(f"the downstream stays down {remaining:.0f} s more")
                time.sleep(remaining)
            log("the downstream is back")
            before = downstream.count()
            back = Downstream(port)
            back.seen, back.duplicates = downstream.seen, downstream.duplicates
            returned = time.monotonic()
            back.start()
            deadline = returned + 120
            while back.count() < before + args.spans and time.monotonic() < deadline:
                time.sleep(0.05)
            result["delivered"] = back.count()
            result["expected"] = before + args.spans
            result["delivery_seconds"] = round(back.last_at - returned, 2) if back.count() > before else None
            result["duplicates"] = back.duplicates
            values = scrape_metrics(server.api)
            result["forward_metrics"] = {
                "forwarded": metric(values, "otel_cost_forward_spans_total", outcome="forwarded"),
                "dropped": metric(values, "otel_cost_forward_spans_total", outcome="dropped"),
                "rejected": metric(values, "otel_cost_forward_spans_total", outcome="rejected"),
                "retries": metric(values, "otel_cost_forward_retries_total"),
            }
            back.stop()
        finally:
            server.stop()
            downstream.stop()

        ceiling = phases["off"]["spans_per_second"]
        result["phases"] = phases
        result["ratio_up"] = round(phases["up"]["spans_per_second"] / ceiling, 3)
        result["ratio_down"] = round(phases["down"]["spans_per_second"] / ceiling, 3)
    result["ok"] = (
        result["delivered"] == result["expected"]
        and result["duplicates"] == 0
        and result["stored_during_outage"] == args.spans
        and result["caps_follow_spend"]
    )
    return result


def _spans_in(payloads: list[bytes]) -> int:
    return sum(
        len(scope_spans.spans)
        for payload in payloads
        for resource_spans in ExportTraceServiceRequest.FromString(payload).resource_spans
        for scope_spans in resource_spans.scope_spans
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and short (the test suite's run)")
    parser.add_argument("--spans", type=int, default=None, help="spans per phase (default 100000; quick 10240)")
    parser.add_argument("--outage-seconds", type=float, default=None, help="default 120; quick 3")
    parser.add_argument("--concurrency", type=int, default=4, help="exports in flight")
    args = parser.parse_args(argv)
    args.spans = args.spans or (10_240 if args.quick else 102_400)
    args.outage_seconds = args.outage_seconds if args.outage_seconds is not None else (3.0 if args.quick else 120.0)
    if not OTEL_COST.exists():
        log(f"{OTEL_COST} not found; run 'make install' first")
        return 2
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    result = run(args)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
