"""Reliability report: fault scenarios end to end, one JSON object on stdout.

    .venv/bin/python bench/chaos.py [--quick] [--scenario NAME ...]

Every scenario sends GenAI spans with the real OpenTelemetry SDK and OTLP/gRPC exporter (which
retries, honouring RetryInfo) and records which spans each acknowledged export carried. At the end
it reads the store through the server's API and reports, per scenario: `acknowledged` (spans in
exports the exporter reported as exported), `stored` (distinct spans in `requests`), `duplicated`
(rows beyond the first per span), `lost` (acknowledged but not stored), `recovery_seconds` and
`peak_rss_mb`, plus `rollups_match` (raw rows and cost equal the minute and hour rollups: no partial
batch) and what the spool did.

Scenarios:
- `crash_receive`, `crash_journaled`, `crash_insert`, `crash_inserted`: `otel-cost serve` in its own
  process is SIGKILLed at a crash point (`otel_cost/faults.py`; `crash_insert` lands the kill inside
  the insert into the raw table and its materialized views), then started again on the same store
  and spool. A budget blocks the traffic's team before the kill: the cap state must still say
  block when the new process is ready, and no alert may fire twice. `recovery_seconds`: from the
  kill to the new process answering /readyz (the spool replayed). `peak_rss_mb`: the server and its
  worker processes, sampled.
- `store_outage`: the `requests` table disappears for a while (RENAME TABLE) under load; exports are
  acknowledged from the spool and drained in order when it is back. `recovery_seconds`: from the
  store's return to an empty spool.
- `store_stall`: inserts hang (the store stops answering); after `store.insert_timeout_seconds` the
  writer spools and acknowledges; the hung insert lands late and its replay must not double it.
- `spool_full`: an outage longer than a small spool holds: exports beyond it are refused with
  UNAVAILABLE + RetryInfo, the exporters retry, nothing is lost.
  These three run the server inside a scenario process (so the fault can reach the store); that
  process's peak RSS includes the sending threads.
- `disk_full`: the store's disk fills up (its own small tmpfs, filled by a ballast file; needs root
  to mount, else the scenario reports `skipped`); the spool, on another disk, takes the batches until
  the ballast is removed.
- `overload`: many concurrent raw gRPC senders offer far more than the server can take, against a
  server with small memory bounds (`receiver.max_inflight_bytes`, `store.queue_size`): 64 senders
  after 8. Reported beside the usual keys: throughput under overload against the same server's
  throughput with 8 senders measured first in the same run (`throughput_ratio`), `pushbacks`
  (UNAVAILABLE with RetryInfo, retried after the delay), `client_timeouts`, and `memory_bound_mb`:
  the peak RSS with 8 senders, plus what the same amount of data grew it at that load
  (`engine_growth_mb`: the engine's caches grow with the data, whatever the load; a warm-up phase
  comes first), plus the headroom the configuration allows (8 x max_inflight_bytes for requests
  being decoded, twice the export size per receiver.max_concurrent_exports for requests gRPC
  holds, 2 KiB per row of store.queue_size).

Progress goes to stderr; exit status 1 when any scenario lost or duplicated a span (or its rollups
differ, or the cap state did not survive).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OTEL_COST = Path(sys.executable).parent / "otel-cost"
TEAM = "chaos"
SERVICE = "chaos-bench"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
CRASH_POINTS = {
    "crash_receive": "receive:4",
    "crash_journaled": "journaled:4",
    "crash_insert": "insert:4:0.015",
    "crash_inserted": "inserted:4",
}
IN_PROCESS = ("store_outage", "store_stall", "spool_full")
SCENARIOS = (*CRASH_POINTS, *IN_PROCESS, "disk_full", "overload")


def log(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_config(store: Path, grpc_port: int, http_port: int, api_port: int) -> dict[str, Any]:
    return {
        "receiver": {
            "grpc_endpoint": f"127.0.0.1:{grpc_port}",
            "http_endpoint": f"127.0.0.1:{http_port}",
            "workers": 0,
        },
        "api": {"endpoint": f"127.0.0.1:{api_port}"},
        "store": {"url": f"chdb:{store}", "flush_interval_millis": 50, "spool_retry_max_seconds": 1},
        "enforcer": {"interval_seconds": 1},
        "budgets": [
            {
                "name": "chaos",
                "scope": {"team": TEAM},
                "window": "60m",
                "limit": "0.05",
                "alert_at": [0.5],
                "block_at": 1,
            }
        ],
    }


# --- the sending side -------------------------------------------------------------------------------


class Sender:
    """Threads sending GenAI spans through the real OTLP/gRPC exporter; `acknowledged` holds the span
    keys (trace id + span id, hex) of every export the exporter reported as exported."""

    def __init__(self, endpoint: str, *, threads: int = 1, spans_per_export: int = 100, pause: float = 0.05) -> None:
        self.endpoint = endpoint
        self.threads = threads
        self.spans_per_export = spans_per_export
        self.pause = pause
        self.acknowledged: set[str] = set()
        self.failed_spans = 0
        self.exports = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), name=f"chaos-sender-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(120)

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def ledger(self, api: Api) -> dict[str, Any]:
        with self._lock:
            return ledger(api, set(self.acknowledged), self.failed_spans)

    def _run(self, index: int) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import SpanExportResult
        from opentelemetry.trace import SpanKind

        ended: list[ReadableSpan] = []

        class Collect(SpanProcessor):
            def on_end(self, span: ReadableSpan) -> None:
                ended.append(span)

        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE, "team": TEAM}))
        provider.add_span_processor(Collect())
        tracer = provider.get_tracer("chaos-bench")
        exporter = OTLPSpanExporter(endpoint=self.endpoint, insecure=True, timeout=60)
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 100,
            "app.feature": f"chaos-{index}",
        }
        while not self._stop.is_set():
            ended.clear()
            for _ in range(self.spans_per_export):
                tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=attributes).end()
            spans = list(ended)
            result = exporter.export(spans)
            keys = [f"{span.context.trace_id:032x}{span.context.span_id:016x}" for span in spans]
            with self._lock:
                self.exports += 1
                if result == SpanExportResult.SUCCESS:
                    self.acknowledged.update(keys)
                else:
                    self.failed_spans += len(keys)
            if self.pause:
                self._stop.wait(self.pause)
        exporter.shutdown()


# --- the server side --------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(child) for child in handle.read().split()]
    return found


def _rss_kb(pid: int, field: str) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class RssMonitor:
    """Samples the summed peak RSS (VmHWM) of a process tree; follows whichever pid `target` returns."""

    def __init__(self, target: Callable[[], int | None]) -> None:
        self.target = target
        self.peak_kb = 0
        self.main_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            pid = self.target()
            if pid:
                main = _rss_kb(pid, "VmHWM:")
                workers = sum(_rss_kb(one, "VmHWM:") for one in _children(pid))
                self.peak_kb = max(self.peak_kb, main + workers)
                self.main_kb = max(self.main_kb, main)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return round(self.peak_kb / 1024, 1)


class Api:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, timeout: float = 10) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()

    def sql(self, query: str) -> list[dict[str, Any]]:
        request = urllib.request.Request(
            self.url + "/v1/sql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            document = json.loads(response.read())
        names = [column["name"] for column in document["columns"]]
        return [dict(zip(names, row, strict=True)) for row in document["rows"]]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def metric(self, name: str, labels: str = "") -> float:
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in str(self.get("/metrics")).splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


class ServerProcess:
    """`otel-cost serve --config FILE` in its own process; its output goes to a log file."""

    def __init__(self, workdir: Path, config: dict[str, Any], crash_at: str = "") -> None:
        self.config_file = workdir / "config.yaml"
        self.config_file.write_text(json.dumps(config))  # JSON is YAML
        self.api = Api(f"http://{config['api']['endpoint']}")
        env = {**os.environ, "OTEL_COST_CRASH_AT": crash_at}
        self.log_file = (workdir / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(OTEL_COST), "serve", "--config", str(self.config_file)],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}); see {self.log_file.name}")
            if self.api.ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"the server was not ready within {timeout} s; see {self.log_file.name}")

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            if self.wait_exit(60) is None:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def ledger(api: Api, acknowledged: set[str], unacknowledged: int) -> dict[str, Any]:
    """What the store holds against what the senders were told: the figures every scenario reports."""
    rows = api.sql(
        f"SELECT concat(trace_id, span_id) AS k, count() AS n FROM requests WHERE service_name = '{SERVICE}' GROUP BY k"
    )
    stored = {row["k"]: int(row["n"]) for row in rows}
    totals = api.sql(
        "SELECT (SELECT count() FROM requests) AS raw_calls, (SELECT toString(sum(cost)) FROM requests) AS raw_cost, "
        "(SELECT sum(calls) FROM spend_minute) AS minute_calls, (SELECT toString(sum(cost)) FROM spend_minute) "
        "AS minute_cost, (SELECT sum(calls) FROM spend_hour) AS hour_calls, "
        "(SELECT toString(sum(cost)) FROM spend_hour) AS hour_cost"
    )[0]
    return {
        "acknowledged": len(acknowledged),
        "stored": len(stored),
        "duplicated": sum(count - 1 for count in stored.values()),
        "lost": len(acknowledged - stored.keys()),
        "rollups_match": totals["raw_calls"] == totals["minute_calls"] == totals["hour_calls"]
        and totals["raw_cost"] == totals["minute_cost"] == totals["hour_cost"],
        "raw_cost_usd": totals["raw_cost"],
        "unacknowledged_spans": unacknowledged,
    }


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cap_action(api: Api) -> str:
    caps = api.get("/v1/caps")["caps"]
    actions = [cap["action"] for cap in caps if cap.get("scope", {}).get("team") == TEAM]
    return actions[0] if actions else "allow"


# --- scenarios --------------------------------------------------------------------------------------


def crash(name: str, workdir: Path, quick: bool) -> dict[str, Any]:
    ports = free_port(), free_port(), free_port()
    config = base_config(workdir / "store", *ports)
    if name == "crash_insert":
        config["receiver"]["workers"] = 1  # and the worker process must not outlive its parent
        config["store"]["flush_interval_millis"] = 200  # larger batches: the kill lands mid-insert
    server = ServerProcess(workdir, config, crash_at=CRASH_POINTS[name])
    current: list[ServerProcess] = [server]
    monitor = RssMonitor(lambda: current[0].pid if current[0].process.poll() is None else None)
    server.wait_ready()
    sender = Sender(f"127.0.0.1:{ports[0]}", threads=2, spans_per_export=200, pause=0.02)
    sender.start()
    children = _children(server.pid)
    code = server.wait_exit(120)
    killed_at = time.monotonic()
    if code != -signal.SIGKILL:
        sender.stop()
        raise RuntimeError(f"{name}: the server was not killed at its crash point (exit {code})")
    before = sender.count()
    log(f"{name}: killed with {before} spans acknowledged; restarting")
    server.log_file.close()
    restarted = ServerProcess(workdir, config)
    current[0] = restarted
    restarted.wait_ready()
    recovery = time.monotonic() - killed_at
    cap_after_restart = cap_action(restarted.api)
    orphans = [pid for pid in children if _alive(pid)]
    wait_for(lambda: sender.count() > before + 2000, 120, "acknowledgements after the restart")
    time.sleep(1 if quick else 5)
    sender.stop()
    peak_mb = monitor.stop()  # before the checking queries, which are not load
    result = {"name": name, **sender.ledger(restarted.api)}
    alerts = restarted.api.sql("SELECT count() AS n, uniqExact(key) AS keys FROM alerts")[0]
    result.update(
        recovery_seconds=round(recovery, 2),
        peak_rss_mb=peak_mb,
        replayed_batches=int(restarted.api.metric("otel_cost_spool_events_total", 'event="replayed"')),
        cap_action_after_restart=cap_after_restart,
        alerts_fired=int(alerts["n"]),
        alerts_fired_twice=int(alerts["n"]) - int(alerts["keys"]),
        orphaned_workers=len(orphans),
    )
    restarted.stop()
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"
    return True


def in_process(name: str, workdir: Path, quick: bool) -> dict[str, Any]:
    """The server in this process, so the fault can reach its store."""
    import asyncio

    from otel_cost.config import load_config
    from otel_cost.server import Server
    from otel_cost.store import open_store

    ports = free_port(), free_port(), free_port()
    config = base_config(workdir / "store", *ports)
    config["store"]["insert_timeout_seconds"] = 1
    if name == "spool_full":
        config["store"]["spool_max_bytes"] = 512 * 1024
    store = open_store(config["store"]["url"])
    stalling = _Stalling(store) if name == "store_stall" else None
    server = Server(load_config(overrides=config, environ={}), store=stalling or store)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(120)
    api = Api(f"http://127.0.0.1:{ports[2]}")
    sender = Sender(f"127.0.0.1:{ports[0]}", threads=2, spans_per_export=100, pause=0.05)
    sender.start()
    wait_for(lambda: sender.count() >= 1000, 60, "traffic")
    outage = 4 if quick else 10
    log(f"{name}: the store goes away for {outage} s")
    if stalling is not None:
        stalling.stall.set()
    else:
        store.execute("RENAME TABLE requests TO requests_away")
    time.sleep(outage)
    spooled = server.metrics.registry.get_sample_value("otel_cost_spool_batches") or 0
    back = time.monotonic()
    if stalling is not None:
        stalling.stall.clear()
        stalling.release.set()
    else:
        store.execute("RENAME TABLE requests_away TO requests")
    log(f"{name}: the store is back with {int(spooled)} batches spooled")
    wait_for(lambda: not server.metrics.registry.get_sample_value("otel_cost_spool_batches"), 120, "the drain")
    recovery = time.monotonic() - back
    time.sleep(1 if quick else 3)
    sender.stop()
    peak_mb = round(_rss_kb(os.getpid(), "VmHWM:") / 1024, 1)
    result = {"name": name, **sender.ledger(api)}
    registry = server.metrics.registry
    result.update(
        recovery_seconds=round(recovery, 2),
        peak_rss_mb=peak_mb,
        spooled_at_peak=int(spooled),
        spooled_batches=int(registry.get_sample_value("otel_cost_spool_events_total", {"event": "spooled"}) or 0),
        drained_batches=int(registry.get_sample_value("otel_cost_spool_events_total", {"event": "drained"}) or 0),
        refused_batches=int(registry.get_sample_value("otel_cost_spool_events_total", {"event": "refused"}) or 0),
        rss_includes_sender=True,
    )
    asyncio.run_coroutine_threadsafe(server.stop(grace_seconds=1), loop).result(120)
    loop.call_soon_threadsafe(loop.stop)
    store.close()
    return result


def _stalling_store_class() -> type:
    from otel_cost.store import Store

    class Stalling(Store):
        """Fault injection around the real store: inserts hang while `stall` is set."""

        def __init__(self, real: Store) -> None:
            self.real = real
            self.url = real.url
            self.stall = threading.Event()
            self.release = threading.Event()

        def execute(self, sql: str) -> None:
            self.real.execute(sql)

        def insert_batch(self, data: bytes, token: str) -> None:
            if self.stall.is_set():
                self.release.wait(300)
            self.real.insert_batch(data, token)

        def insert_outcomes(self, data: bytes, token: str) -> None:
            self.real.insert_outcomes(data, token)

        def query(self, sql: str, *, readonly: bool = True) -> Any:
            return self.real.query(sql, readonly=readonly)

        def poll(self, sql: str, *, lane: str = "enforcer") -> Any:
            return self.real.poll(sql, lane=lane)

        def query_text(self, sql: str, fmt: str, *, readonly: bool = True) -> bytes:
            return self.real.query_text(sql, fmt, readonly=readonly)

        def close(self) -> None:
            self.real.close()

    return Stalling


def _Stalling(real: Any) -> Any:  # noqa: N802 - a class made on demand (otel_cost imported late)
    return _stalling_store_class()(real)


def overload(workdir: Path, quick: bool) -> dict[str, Any]:
    import grpc
    from google.rpc import error_details_pb2
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    ports = free_port(), free_port(), free_port()
    config = base_config(workdir / "store", *ports)
    config.pop("budgets")
    config["receiver"].update(workers=2, max_inflight_bytes=4 * 1024 * 1024, max_concurrent_exports=32)
    config["store"].update(queue_size=20_000, batch_size=10_000, flush_interval_millis=200)
    server = ServerProcess(workdir, config)
    server.wait_ready()
    monitor = RssMonitor(lambda: server.pid)

    def attribute(key: str, value: str | int) -> KeyValue:
        any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
        return KeyValue(key=key, value=any_value)

    def request(spans: int) -> tuple[bytes, list[str]]:
        now = time.time_ns()
        keys, items = [], []
        for _ in range(spans):
            trace_id, span_id = os.urandom(16), os.urandom(8)
            keys.append(trace_id.hex() + span_id.hex())
            items.append(
                Span(
                    trace_id=trace_id,
                    span_id=span_id,
                    name="chat gpt-4o-mini",
                    kind=Span.SPAN_KIND_CLIENT,
                    start_time_unix_nano=now,
                    end_time_unix_nano=now + 1_000_000,
                    attributes=[
                        attribute("gen_ai.operation.name", "chat"),
                        attribute("gen_ai.provider.name", "openai"),
                        attribute("gen_ai.request.model", "gpt-4o-mini"),
                        attribute("gen_ai.usage.input_tokens", 1000),
                        attribute("gen_ai.usage.output_tokens", 100),
                    ],
                )
            )
        resource_spans = ResourceSpans(scope_spans=[ScopeSpans(spans=items)])
        resource_spans.resource.attributes.extend([attribute("service.name", SERVICE), attribute("team", TEAM)])
        return ExportTraceServiceRequest(resource_spans=[resource_spans]).SerializeToString(), keys

    acknowledged: set[str] = set()
    counters = {"pushbacks": 0, "client_timeouts": 0, "other_errors": 0}
    lock = threading.Lock()

    def blast(threads: int, requests: list[tuple[bytes, list[str]]]) -> float:
        """`threads` senders send prebuilt `requests` as fast as the server lets them; spans/s stored."""
        pending = list(requests)
        start_count = len(acknowledged)

        def run() -> None:
            channel = grpc.insecure_channel(f"127.0.0.1:{ports[0]}")
            export = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
            while True:
                with lock:
                    if not pending:
                        break
                    body, keys = pending.pop()
                while True:  # a real exporter: retry after RetryInfo, within a deadline
                    try:
                        export(body, timeout=30)
                    except grpc.RpcError as error:
                        code = error.code()  # type: ignore[attr-defined]
                        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                            with lock:
                                counters["client_timeouts"] += 1
                            break
                        if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                            with lock:
                                counters["other_errors"] += 1
                            break
                        delay = 1.0
                        for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
                            if key == "google.rpc.retryinfo-bin":
                                retry = error_details_pb2.RetryInfo.FromString(value)
                                delay = retry.retry_delay.ToTimedelta().total_seconds()
                        with lock:
                            counters["pushbacks"] += 1
                        time.sleep(delay * random.uniform(0.5, 1.0))
                        continue
                    with lock:
                        acknowledged.update(keys)
                    break
            channel.close()

        workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(600)
        return (len(acknowledged) - start_count) / (time.monotonic() - started)

    exports = 60 if quick else 200
    log(f"overload: building {3 * exports} exports of 1000 spans")
    runs = [[request(1000) for _ in range(exports)] for _ in range(3)]
    log("overload: warm-up with 8 senders")
    blast(8, runs[0])
    warm_mb = monitor.peak_kb / 1024
    log("overload: capacity with 8 senders")
    capacity = blast(8, runs[1])
    capacity_peak_mb = monitor.peak_kb / 1024
    engine_growth_mb = capacity_peak_mb - warm_mb  # more data alone grows the engine's caches
    log(f"overload: {capacity:.0f} spans/s, peak RSS {capacity_peak_mb:.0f} MB; now 64 senders at once")
    pushbacks_before = counters["pushbacks"]
    under_overload = blast(64, runs[2])
    peak_mb = monitor.stop()  # before the checking queries, which are not load
    log(f"overload: {under_overload:.0f} spans/s under overload, peak RSS {peak_mb:.0f} MB")

    with lock:
        result = {"name": "overload", **ledger(server.api, set(acknowledged), 0)}
    receiver = config["receiver"]
    export_bytes = len(runs[0][0][0])
    headroom_mb = (
        8 * receiver["max_inflight_bytes"]  # requests being decoded and priced
        + 2 * receiver["max_concurrent_exports"] * export_bytes  # requests gRPC holds for the handler
        + 2048 * config["store"]["queue_size"]  # rows waiting for an insert
    ) / 2**20
    result.update(
        recovery_seconds=0.0,
        peak_rss_mb=peak_mb,
        capacity_peak_rss_mb=round(capacity_peak_mb, 1),
        engine_growth_mb=round(engine_growth_mb, 1),
        memory_bound_mb=round(capacity_peak_mb + max(engine_growth_mb, 0) + headroom_mb, 1),
        capacity_spans_per_second=round(capacity),
        overload_spans_per_second=round(under_overload),
        throughput_ratio=round(under_overload / capacity, 2) if capacity else 0.0,
        pushbacks=counters["pushbacks"] - pushbacks_before,
        client_timeouts=counters["client_timeouts"],
        other_errors=counters["other_errors"],
    )
    server.stop()
    return result


def fill(path: Path) -> None:
    """Write zeros to `path` until its disk is full.

    Unbuffered: a buffered file keeps the part of a chunk the disk did not take and raises ENOSPC
    again when it is closed (seen in CI when the free space was not a whole number of chunks).
    """
    chunk = b"\0" * (1 << 20)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while True:
            os.write(descriptor, chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(descriptor)


def disk_full(workdir: Path, quick: bool) -> dict[str, Any]:
    """The store's disk fills up (a small tmpfs and a ballast file); the spool is on another disk."""
    disk = workdir / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(disk)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        return {"name": "disk_full", "skipped": f"cannot mount a tmpfs: {mounted.stderr.strip() or 'needs root'}"}
    server: ServerProcess | None = None
    try:
        ports = free_port(), free_port(), free_port()
        config = base_config(disk / "store", *ports)
        config["store"]["spool_dir"] = str(workdir / "spool")
        server = ServerProcess(workdir, config)
        monitor = RssMonitor(lambda: server.pid if server is not None else None)
        server.wait_ready()
        sender = Sender(f"127.0.0.1:{ports[0]}", threads=2, spans_per_export=100, pause=0.05)
        sender.start()
        wait_for(lambda: sender.count() >= 1000, 60, "traffic")
        ballast = disk / "ballast"
        fill(ballast)
        outage = 4 if quick else 10
        log(f"disk_full: the store's disk is full for {outage} s")
        time.sleep(outage)
        spooled = server.api.metric("otel_cost_spool_batches")
        ballast.unlink()
        back = time.monotonic()
        log(f"disk_full: space again, {int(spooled)} batches spooled")
        wait_for(lambda: server is not None and not server.api.metric("otel_cost_spool_batches"), 120, "the drain")
        recovery = time.monotonic() - back
        time.sleep(1 if quick else 3)
        sender.stop()
        peak_mb = monitor.stop()
        result = {"name": "disk_full", **sender.ledger(server.api)}
        result.update(
            recovery_seconds=round(recovery, 2),
            peak_rss_mb=peak_mb,
            spooled_at_peak=int(spooled),
            spooled_batches=int(server.api.metric("otel_cost_spool_events_total", 'event="spooled"')),
            drained_batches=int(server.api.metric("otel_cost_spool_events_total", 'event="drained"')),
        )
        return result
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def run_scenario(name: str, workdir: Path, quick: bool) -> dict[str, Any]:
    if name in CRASH_POINTS:
        return crash(name, workdir, quick)
    if name in IN_PROCESS:
        return in_process(name, workdir, quick)
    if name == "disk_full":
        return disk_full(workdir, quick)
    return overload(workdir, quick)


def healthy(result: dict[str, Any]) -> bool:
    return (
        result["lost"] == 0
        and result["duplicated"] == 0
        and result["rollups_match"]
        and result["acknowledged"] > 0
        and result.get("cap_action_after_restart", "block") == "block"
        and not result.get("alerts_fired_twice")
        and not result.get("orphaned_workers")
        and not result.get("client_timeouts")
        and not result.get("other_errors")
        and result["peak_rss_mb"] <= result.get("memory_bound_mb", float("inf"))
    )


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="otel-cost-chaos-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    parser.add_argument("--quick", action="store_true", help="shorter phases (the test suite's setting)")
    parser.add_argument("--one", metavar="NAME", help=argparse.SUPPRESS)  # a scenario in this process
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        try:
            print(json.dumps(run_scenario(args.one, args.workdir, args.quick)))
        except Exception as exc:
            # The traceback goes to stderr above the server log; the result line says why, so a
            # caller that keeps only the end of the output still sees it.
            traceback.print_exc()
            print(json.dumps({"name": args.one, "error": f"{type(exc).__name__}: {exc}"[:500]}))
            return 1
        return 0
    results = []
    for name in args.scenario or SCENARIOS:
        log(f"{name}: starting")
        with scratch() as workdir:
            # One process per scenario: chDB opens one store path per process, and a fresh process
            # makes each peak RSS its own.
            argv_one = [sys.executable, __file__, "--one", name, "--workdir", str(workdir)]
            flags = ["--quick"] if args.quick else []
            done = subprocess.run([*argv_one, *flags], check=False, stdout=subprocess.PIPE, text=True)
            lines = done.stdout.strip().splitlines()
            result = json.loads(lines[-1]) if lines else {"name": name, "error": "no result"}
            if done.returncode != 0 or "error" in result:
                for log_file in workdir.glob("*.log"):
                    sys.stderr.write(f"--- {log_file.name}, the end:\n{log_file.read_text()[-4000:]}")
                result["error"] = f"exit {done.returncode}: {result.get('error', 'no result')}"
        log(f"{name}: {json.dumps(result)}")
        results.append(result)
    print(json.dumps({"scenarios": results}, indent=None))
    failed = [result for result in results if "error" in result or ("skipped" not in result and not healthy(result))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
