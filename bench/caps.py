"""Cap enforcement benchmark: how long after spend crosses a hard limit does a gateway answer `block`?

    .venv/bin/python bench/caps.py [--trials 30] [--rate 20] [--layout per-team|budget-per-trial]

Prints ONE JSON object on stdout (progress on stderr) and keeps a copy in bench/results/caps-*.json.
Unlike bench/ingest.py it starts everything itself, in four processes on one host:

- the server: `otel-cost serve` on a fresh embedded store in a temp dir, with a config written here
  (budgets only: every other setting, the enforcer's 1 s interval included, is the default), on the
  default ports 4317/4318/8318 unless told otherwise (a busy default is replaced by a free port, and
  the JSON says so);
- the traffic process: sends one GenAI span per OTLP/gRPC export (raw gRPC stub, prebuilt
  `ExportTraceServiceRequest`; the acknowledgement is the Export call returning) at a steady rate,
  without waiting for acknowledgements, for the trial's team;
- the gateway process: the real `otel_cost.gateway.CapsClient` long-polling GET /v1/caps, and a loop
  calling `decide({"service": "caps-bench", "team": team}, model)` every millisecond until it
  returns `block`;
- this process: writes the config, runs the trials, checks the stored costs, stops everything.

Each trial has a fresh budget state: its own team (`trial-N`). With `--layout per-team` (default) one
budget, `scope: {service: caps-bench}, per: [team]`, gives every team its own limit (one query per
enforcer evaluation whatever the number of trials); with `--layout budget-per-trial` every trial has its
own budget `scope: {service: caps-bench, team: trial-N}` (an evaluation then runs one query per
budget). Either way: `window: 60m`, `block_at: 1.0`, and a limit between the cost of `calls_to_cross - 1`
calls and `calls_to_cross` calls, so the `calls_to_cross`-th acknowledged export is the one that
crosses it. Every call is
gpt-4o-mini with only input tokens (0.15 USD per million: 100,000 tokens cost 0.015 USD), so the traffic
process knows exactly which acknowledgement crossed; the stored costs are checked against that at the end.

Per trial: `seconds` = (monotonic time the gateway's decide() first returned block) - (monotonic time
the crossing export's acknowledgement arrived). Negative is possible and kept: the server inserts, then
acknowledges, and on a busy host the block can reach the gateway before the ack reaches the sender.
`overspend_usd` = the cost of the calls the traffic process made (sent) after the crossing ack and up
to the moment the gateway saw block, at `request_rate` calls per second: what a gateway that lets calls
through until it sees block would let through. Headline keys: `p50_seconds`, `p99_seconds` (nearest
rank: with fewer than 100 trials the p99 is the slowest trial), `overspend_usd` (the mean per trial;
p50/p99/max beside it), `request_rate`. `breakdown` splits each trial at the start of the server's
evaluation that first published block (its `generated_at`, seen by a raw long-poll from this process):
the second part includes that evaluation's queries, publishing, the long poll and decide();
`crossing_export_seconds` is the crossing export's own send-to-ack time and `from_crossing_send_seconds`
the time from sending it to the block (what an application sees: its span leaves, then calls stop).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import math
import os
import queue
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
OTEL_COST = Path(sys.executable).parent / "otel-cost"  # the console script of the interpreter's venv
MODEL = "gpt-4o-mini"
SERVICE = "caps-bench"  # the traffic's service.name, in every budget's scope
INPUT_USD_PER_MTOK = Decimal("0.15")  # gpt-4o-mini input, genai-prices 0.2.3 (checked against the store)
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DEFAULT_PORTS = {"grpc": 4317, "http": 4318, "api": 8318}
TARGET_P99_SECONDS = 2.0  # the target, with default settings
GATEWAY_CHECK_SECONDS = 0.001  # how often the gateway process asks decide(): the resolution of the figure

# CLOCK_MONOTONIC is system-wide on Linux: time.monotonic() values taken in the traffic, gateway and this
# process are on one clock and can be subtracted across processes (not across hosts). Wall-clock time
# (time.time()) is only used to place the server's `generated_at` (also wall clock, same host).


_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[caps {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def emit(message: dict[str, Any]) -> None:
    """A helper process's answer to this one: one JSON line on its stdout."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def die_with_parent(parent: int) -> None:
    """In a child: get SIGTERM when the benchmark process dies, even by SIGKILL (Linux), so an interrupted
    benchmark leaves no server or helper running. Set here rather than in a `preexec_fn` (unsafe in a
    process with threads); the setting survives exec, which is how the server gets it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above: nobody is left to signal us
        sys.exit(1)


# --------------------------------------------------------------------------------------------------
# The traffic process
# --------------------------------------------------------------------------------------------------


@dataclass
class Call:
    sent: float  # monotonic, just before the Export call
    acked: float | None = None  # monotonic, when the call returned (None: not yet, or failed)
    acked_wall: float | None = None
    error: str | None = None


def run_traffic(target: str) -> int:
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=30)
    export = channel.unary_unary(
        EXPORT_METHOD,
        request_serializer=ExportTraceServiceRequest.SerializeToString,
        response_deserializer=ExportTraceServiceResponse.FromString,
    )

    def request(team: str, input_tokens: int) -> ExportTraceServiceRequest:
        # Unique trace and span ids: the server drops repeated span keys as retries.
        now = time.time_ns()
        out = ExportTraceServiceRequest()
        resource_spans = out.resource_spans.add()
        for key, text in (("service.name", SERVICE), ("team", team)):
            resource_spans.resource.attributes.append(KeyValue(key=key, value=AnyValue(string_value=text)))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "opentelemetry.instrumentation.openai_v2"
        scope_spans.scope.version = "2.3b0"
        span = scope_spans.spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name=f"chat {MODEL}",
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=now - 500_000_000,
            end_time_unix_nano=now,
        )
        for key, value in (
            ("gen_ai.operation.name", AnyValue(string_value="chat")),
            ("gen_ai.provider.name", AnyValue(string_value="openai")),
            ("gen_ai.request.model", AnyValue(string_value=MODEL)),
            ("gen_ai.usage.input_tokens", AnyValue(int_value=input_tokens)),
            ("gen_ai.usage.output_tokens", AnyValue(int_value=0)),
        ):
            span.attributes.append(KeyValue(key=key, value=value))
        return out

    lock = threading.Condition()
    calls: list[Call] = []
    stop = threading.Event()

    def acknowledged(call: Call, future: grpc.Future) -> None:
        at, wall = time.monotonic(), time.time()
        error = future.exception()
        with lock:
            if error is None:
                call.acked, call.acked_wall = at, wall
            else:
                call.error = f"{type(error).__name__}: {error}"
            lock.notify_all()

    def send(team: str, rate: float, input_tokens: int, max_seconds: float) -> None:
        # A steady schedule, independent of acknowledgements (an application does not wait for its
        # telemetry): call i is due at start + i / rate; a late one goes at once.
        start = time.monotonic()
        index = 0
        while not stop.is_set():
            due = start + index / rate
            if due - start > max_seconds:
                break
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            payload = request(team, input_tokens)
            call = Call(sent=time.monotonic())
            with lock:
                calls.append(call)
            future = export.future(payload, timeout=60)
            future.add_done_callback(lambda done, call=call: acknowledged(call, done))
            index += 1

    sender: threading.Thread | None = None
    emit({"event": "ready"})
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "run":
            stop.clear()
            calls.clear()
            sender = threading.Thread(
                target=send,
                args=(command["team"], command["rate"], command["input_tokens"], command["max_seconds"]),
                daemon=True,
            )
            sender.start()
            emit({"event": "started"})
        elif command["cmd"] == "stop":
            stop.set()
            if sender is not None:
                sender.join()
            with lock:  # every call answered (acknowledged or failed), or 60 s
                lock.wait_for(lambda: all(c.acked is not None or c.error for c in calls), timeout=60)
                answered = [[c.sent, c.acked, c.acked_wall, c.error] for c in calls]
            emit({"event": "calls", "calls": answered})
        elif command["cmd"] == "quit":
            break
    channel.close()
    return 0


# --------------------------------------------------------------------------------------------------
# The gateway process
# --------------------------------------------------------------------------------------------------


def run_gateway(api: str) -> int:
    from otel_cost.gateway import CapsClient

    # fail_mode="open": a stale or missing document answers allow, so a `block` is always the enforcer's.
    client = CapsClient(api, fail_mode="open").start()
    try:
        client.wait_ready(60)
        emit({"event": "ready", "version": client.version})
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "quit":
                break
            team = command["team"]
            attributes = {"service": SERVICE, "team": team}  # what a gateway knows of the request
            first = client.decide(attributes, MODEL)
            if first.action == "block":
                emit({"event": "error", "message": f"{team} is blocked before its trial: {first.reasons}"})
                continue
            emit({"event": "watching"})
            deadline = time.monotonic() + command["timeout"]
            while True:
                decision = client.decide(attributes, MODEL)
                now = time.monotonic()
                if decision.action == "block":
                    emit(
                        {
                            "event": "blocked",
                            "at": now,
                            "wall": time.time(),
                            "version": client.version,
                            "budgets": list(decision.budgets),
                            "reasons": list(decision.reasons),
                        }
                    )
                    break
                if now > deadline:
                    emit({"event": "timeout", "action": decision.action, "version": client.version})
                    break
                time.sleep(GATEWAY_CHECK_SECONDS)
    finally:
        client.close()
    return 0


# --------------------------------------------------------------------------------------------------
# This process: the server, the helpers, the trials
# --------------------------------------------------------------------------------------------------


class BenchError(Exception):
    pass


class Helper:
    """A helper process (this script with --role) spoken to in JSON lines over its stdin/stdout."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches only this process, which stops the helper itself
        )
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: TextIO | None) -> None:
        assert stream is not None
        for line in stream:
            try:
                self._answers.put(json.loads(line))
            except ValueError:
                log(f"{self.name}: {line.rstrip()}")
        self._answers.put({"event": "exited", "code": self.process.wait()})

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise BenchError(f"the {self.name} process is gone ({exc})") from None

    def expect(self, events: Sequence[str], timeout: float) -> dict[str, Any]:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"the {self.name} process did not answer within {timeout:g}s") from None
        if answer["event"] not in events:
            raise BenchError(f"the {self.name} process answered {answer} (expected {' or '.join(events)})")
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, BenchError):
                self.send({"cmd": "quit"})
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                log(f"the {self.name} process did not stop within 10s; killing it")
                self.process.kill()
                self.process.wait()


class Server:
    """`otel-cost serve` on a store in `work`, stopped by SIGTERM (it finishes in-flight exports)."""

    def __init__(self, work: Path, config: Path, ports: dict[str, int]) -> None:
        self.log_path = work / "server.log"
        self.api = f"http://127.0.0.1:{ports['api']}"
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            "server",
            "--parent",
            str(os.getpid()),
            "--",
            str(OTEL_COST),
            "serve",
            "--config",
            str(config),
            "--store",
            f"chdb:{work / 'store'}",
            "--grpc-endpoint",
            f"127.0.0.1:{ports['grpc']}",
            "--http-endpoint",
            f"127.0.0.1:{ports['http']}",
            "--api-endpoint",
            f"127.0.0.1:{ports['api']}",
        ]
        with self.log_path.open("wb") as server_log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                cwd=work,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise BenchError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if http_get(f"{self.api}/readyz", 2)[0] == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise BenchError(f"the server was not ready within {timeout:g}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("  | " + line for line in text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                log("the server did not stop within 30s; killing it")
                self.process.kill()
                self.process.wait()


def http_get(url: str, timeout: float, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def sql_rows(api: str, query: str) -> list[list[Any]]:
    body = json.dumps({"query": query, "format": "json"}).encode()
    request = urllib.request.Request(
        f"{api}/v1/sql", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["rows"]  # type: ignore[no-any-return]


class Observer:
    """A raw long-poll on GET /v1/caps from this process: for each team, the server's `generated_at` of
    the first document that blocks it (the evaluation that decided), to split each trial's time into
    "until the enforcer decided" and "until the gateway's decide() saw it"."""

    def __init__(self, api: str) -> None:
        parts = urlsplit(api)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self.first_block: dict[str, float] = {}  # team -> generated_at, Unix seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="caps-observer", daemon=True)
        self._thread.start()

    def _get(self, etag: str) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=60)
        with self._lock:
            if self._stop.is_set():
                raise OSError("stopped")
            self._connection = connection
        try:
            if etag:
                connection.request("GET", "/v1/caps?wait=30", headers={"If-None-Match": etag})
            else:
                connection.request("GET", "/v1/caps")
            response = connection.getresponse()
            return response.status, response.getheader("ETag") or "", response.read()
        finally:
            with self._lock:
                self._connection = None
            connection.close()

    def _run(self) -> None:
        etag = ""
        while not self._stop.is_set():
            try:
                status, etag_now, body = self._get(etag)
            except (OSError, http.client.HTTPException):
                self._stop.wait(0.2)
                continue
            if status != 200:
                continue
            etag = etag_now
            document = json.loads(body)
            generated = datetime.strptime(document["generated_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            with self._lock:
                for cap in document["caps"]:
                    team = cap["scope"].get("team", "")
                    if cap["action"] == "block" and team not in self.first_block:
                        self.first_block[team] = generated.timestamp()

    def decided_at(self, team: str) -> float | None:
        with self._lock:
            return self.first_block.get(team)

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            connection = self._connection
        sock = connection.sock if connection is not None else None
        if sock is not None:  # end a long poll in flight now rather than when the server answers
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)


def port_or_free(preferred: int) -> tuple[int, str | None]:
    """`preferred` when nothing listens on it (0: any free port); else a free port and why."""

    def bind(port: int) -> int:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            sock.bind(("127.0.0.1", port))
            return int(sock.getsockname()[1])

    if preferred:
        try:
            return bind(preferred), None
        except OSError as exc:
            return bind(0), f"{preferred} busy ({exc.strerror})"
    return bind(0), None


def nearest_rank(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(nearest_rank(values, 0.5), digits),
        "p99": round(nearest_rank(values, 0.99), digits),
        "max": round(max(values), digits),
        "mean": round(statistics.fmean(values), digits),
    }


def write_config(path: Path, args: argparse.Namespace, teams: list[str], limit: Decimal) -> list[dict[str, Any]]:
    common = {"window": "60m", "limit": str(limit), "block_at": 1.0}
    if args.layout == "per-team":
        # A dimension cannot be both in scope and in per: the service holds the scope.
        budgets = [{"name": "caps-bench", "scope": {"service": SERVICE}, "per": ["team"], **common}]
    else:
        budgets = [
            {"name": f"caps-bench-{team}", "scope": {"service": SERVICE, "team": team}, **common} for team in teams
        ]
    config: dict[str, Any] = {"budgets": budgets}
    if args.enforcer_interval is not None:
        config["enforcer"] = {"interval_seconds": args.enforcer_interval}
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return budgets


def trial(
    team: str,
    args: argparse.Namespace,
    traffic: Helper,
    gateway: Helper,
    observer: Observer,
    usd_per_call: Decimal,
) -> dict[str, Any]:
    ramp = (args.calls_to_cross - 1) / args.rate
    gateway.send({"cmd": "watch", "team": team, "timeout": ramp + args.trial_timeout})
    gateway.expect(["watching"], 30)
    traffic.send(
        {
            "cmd": "run",
            "team": team,
            "rate": args.rate,
            "input_tokens": args.input_tokens,
            # A trial that never blocks stops sending after the timeout, not never.
            "max_seconds": ramp + args.trial_timeout,
        }
    )
    traffic.expect(["started"], 30)
    seen = gateway.expect(["blocked", "timeout"], ramp + args.trial_timeout + 30)
    traffic.send({"cmd": "stop"})
    calls = traffic.expect(["calls"], 90)["calls"]

    failed = [error for _, _, _, error in calls if error]
    acks = sorted((acked, wall) for _, acked, wall, _ in calls if acked is not None)
    out: dict[str, Any] = {"team": team, "calls": len(calls), "failed_calls": len(failed)}
    if failed:
        out["errors"] = failed[:3]
    if len(acks) < args.calls_to_cross:
        out["error"] = f"only {len(acks)} export(s) acknowledged, {args.calls_to_cross} needed to cross"
        return out
    # Every call costs the same, so whichever export's ack is the calls_to_cross-th to arrive is the one
    # after which the stored spend first reaches the limit.
    crossed_at, crossed_wall = acks[args.calls_to_cross - 1]
    crossing = next(call for call in calls if call[1] == crossed_at)
    out["crossing_export_seconds"] = round(crossed_at - crossing[0], 4)  # its send to its ack
    if seen["event"] != "blocked":
        out["error"] = f"no block within {args.trial_timeout:g}s of the crossing (last action {seen['action']})"
        return out
    blocked_at = seen["at"]
    sent_before_block = sum(1 for sent, *_ in calls if sent <= blocked_at)
    after_crossing = sum(1 for sent, *_ in calls if crossed_at < sent <= blocked_at)
    out.update(
        {
            "seconds": round(blocked_at - crossed_at, 4),
            "from_crossing_send_seconds": round(blocked_at - crossing[0], 4),
            "calls_after_crossing_ack": after_crossing,
            "overspend_usd": float(after_crossing * usd_per_call),
            # Everything sent before the block beyond the limit: also the calls in flight at the crossing.
            "spent_past_limit_usd": float(sent_before_block * usd_per_call - args.limit),
            "version": seen["version"],
        }
    )
    decided = observer.decided_at(team)
    if decided is not None:
        out["ack_to_evaluation_start_seconds"] = round(decided - crossed_wall, 4)
        out["evaluation_start_to_gateway_seconds"] = round(seen["wall"] - decided, 4)
    return out


def check_store(api: str, teams: list[str], usd_per_call: Decimal, acked: int, errors: list[str]) -> dict[str, Any]:
    """Every acknowledged call stored once, billable, at the cost the traffic process assumed."""
    names = ", ".join(f"'{team}'" for team in teams)
    rows = sql_rows(
        api,
        f"SELECT count(), countIf(billable = 1), toString(min(cost)), toString(max(cost)) "
        f"FROM requests WHERE team IN ({names})",
    )
    count, billable, low, high = rows[0]
    stored = {"rows": int(count), "billable": int(billable), "min_cost": low, "max_cost": high}
    if int(count) != acked or int(billable) != acked:
        errors.append(f"stored {count} rows ({billable} billable) for {acked} acknowledged calls")
    if count and not (Decimal(low) == Decimal(high) == usd_per_call):
        errors.append(f"stored costs {low}..{high} USD per call, the benchmark assumed {usd_per_call}")
    return stored


def run(
    args: argparse.Namespace, result: dict[str, Any], errors: list[str], cleanups: list[Callable[[], None]]
) -> None:
    usd_per_call = INPUT_USD_PER_MTOK * args.input_tokens / 1_000_000
    # Halfway between the cost of calls_to_cross - 1 calls and calls_to_cross calls: the
    # calls_to_cross-th is the one that crosses, with no reliance on an exact equality.
    limit = usd_per_call * (Decimal(args.calls_to_cross) - Decimal("0.5"))
    args.limit = limit
    teams = [f"trial-{index}" for index in range(args.warmup_trials + args.trials)]

    work = Path(tempfile.mkdtemp(prefix="otel-cost-caps-bench."))
    cleanups.append(lambda: shutil.rmtree(work, ignore_errors=True))
    result["store_dir"] = str(work)
    config_path = work / "otel-cost.yaml"
    budgets = write_config(config_path, args, teams, limit)

    from otel_cost.config import load_config

    config = load_config(config_path, environ={})  # what the server will run with: defaults filled in
    ports: dict[str, int] = {}
    for name, preferred in (("grpc", args.grpc_port), ("http", args.http_port), ("api", args.api_port)):
        ports[name], why = port_or_free(preferred)
        if why:
            result.setdefault("port_notes", []).append(f"{name}: {why}, used {ports[name]}")
            log(f"port {why}: using {ports[name]} for {name}")
    result["ports"] = ports
    result["budget"] = {
        "layout": args.layout,
        "budgets": len(budgets),
        "scope": budgets[0]["scope"],
        "per": budgets[0].get("per", []),
        "window": "60m",
        "limit_usd": str(limit),
        "block_at": 1.0,
        "usd_per_call": str(usd_per_call),
        "calls_to_cross": args.calls_to_cross,
        "model": MODEL,
        "input_tokens_per_call": args.input_tokens,
    }
    result["enforcer_interval_seconds"] = config.enforcer.interval_seconds
    result["store_flush_interval_millis"] = config.store.flush_interval_millis
    result["receiver_workers"] = config.receiver.workers

    log(f"starting otel-cost serve (store {work / 'store'}, gRPC :{ports['grpc']}, API :{ports['api']})")
    server = Server(work, config_path, ports)

    def stop_server() -> None:
        log("stopping the server")
        started = time.monotonic()
        server.stop()
        result["server_stop_seconds"] = round(time.monotonic() - started, 2)
        if errors or server.process.returncode:
            log(f"the server exited with {server.process.returncode}; its log ends:\n{server.log_tail()}")

    cleanups.append(stop_server)
    result["pids"] = {"server": server.process.pid}
    result["server_ready_seconds"] = round(server.wait_ready(args.start_timeout), 2)
    log(f"server ready after {result['server_ready_seconds']}s")

    script = str(Path(__file__).resolve())
    parent = ["--parent", str(os.getpid())]
    traffic = Helper(
        "traffic", [sys.executable, script, "--role", "traffic", *parent, "--target", f"127.0.0.1:{ports['grpc']}"]
    )
    cleanups.append(traffic.stop)
    gateway = Helper("gateway", [sys.executable, script, "--role", "gateway", *parent, "--api", server.api])
    cleanups.append(gateway.stop)
    result["pids"].update(traffic=traffic.process.pid, gateway=gateway.process.pid)
    traffic.expect(["ready"], 60)
    gateway.expect(["ready"], 60)
    observer = Observer(server.api)
    cleanups.append(observer.stop)
    log(
        f"{args.warmup_trials} warm-up + {args.trials} trials at {args.rate:g} calls/s, {usd_per_call} USD a call, "
        f"limit {limit} USD (crossed by call {args.calls_to_cross}), {args.layout} budgets"
    )

    rng = random.Random(args.seed)
    trials: list[dict[str, Any]] = []
    for index, team in enumerate(teams):
        # A random pause: the server is idle when a trial starts, and the enforcer's tick falls at a
        # different point of each trial.
        time.sleep(rng.uniform(0.5, 1.5) * args.pause)
        outcome = trial(team, args, traffic, gateway, observer, usd_per_call)
        outcome["warmup"] = index < args.warmup_trials
        trials.append(outcome)
        if "error" in outcome:
            errors.append(f"{team}: {outcome['error']}")
            log(f"{team}: FAILED: {outcome['error']}")
        else:
            log(
                f"{team}{' (warm-up)' if outcome['warmup'] else ''}: block seen {outcome['seconds'] * 1000:.0f} ms "
                f"after the crossing ack, {outcome['calls_after_crossing_ack']} call(s) in between"
            )

    measured = [t for t in trials if not t["warmup"] and "seconds" in t]
    seconds = [t["seconds"] for t in measured]
    overspend = [t["overspend_usd"] for t in measured]
    sent = sum(t["calls"] for t in trials)
    acked = sum(t["calls"] - t["failed_calls"] for t in trials)

    def over_trials(key: str, digits: int) -> dict[str, float]:
        return summary([t[key] for t in measured if key in t], digits)

    if seconds:
        result.update(
            {
                "p50_seconds": round(nearest_rank(seconds, 0.5), 3),
                "p99_seconds": round(nearest_rank(seconds, 0.99), 3),
                "overspend_usd": round(statistics.fmean(overspend), 6),
                "request_rate": args.rate,
                "target_p99_seconds": TARGET_P99_SECONDS,
                "target_met": nearest_rank(seconds, 0.99) <= TARGET_P99_SECONDS,
                "trials": len(measured),
                "trial_seconds": seconds,
                "seconds": summary(seconds),
                "overspend_usd_per_trial": summary(overspend, 6),
                "spent_past_limit_usd_per_trial": over_trials("spent_past_limit_usd", 6),
                "crossing_export_seconds": over_trials("crossing_export_seconds", 4),
                "from_crossing_send_seconds": over_trials("from_crossing_send_seconds", 4),
                "breakdown": {
                    "ack_to_evaluation_start_seconds": over_trials("ack_to_evaluation_start_seconds", 4),
                    "evaluation_start_to_gateway_seconds": over_trials("evaluation_start_to_gateway_seconds", 4),
                },
            }
        )
    result["calls_sent"] = sent
    result["calls_acknowledged"] = acked
    result["stored"] = check_store(server.api, teams, usd_per_call, acked, errors)
    result["trials_detail"] = trials
    if seconds:
        log(
            f"p50 {result['p50_seconds'] * 1000:.0f} ms, p99 {result['p99_seconds'] * 1000:.0f} ms over "
            f"{len(seconds)} trials; overspend {result['overspend_usd']:.4f} USD a trial at {args.rate:g} calls/s"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=30, help="measured trials (default 30; at least 20 for a p99)")
    parser.add_argument("--warmup-trials", type=int, default=2, help="trials run first and not counted (default 2)")
    parser.add_argument("--rate", type=float, default=20.0, help="calls (one-span exports) per second (default 20)")
    parser.add_argument("--calls-to-cross", type=int, default=10, help="the call that crosses the limit (default 10)")
    parser.add_argument("--input-tokens", type=int, default=100_000, help="per call (default 100000: 0.015 USD)")
    parser.add_argument("--layout", choices=["per-team", "budget-per-trial"], default="per-team")
    parser.add_argument("--enforcer-interval", type=float, help="enforcer.interval_seconds (default: the server's)")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_PORTS["grpc"], help="0: any free port")
    parser.add_argument("--http-port", type=int, default=DEFAULT_PORTS["http"], help="0: any free port")
    parser.add_argument("--api-port", type=int, default=DEFAULT_PORTS["api"], help="0: any free port")
    parser.add_argument("--trial-timeout", type=float, default=30.0, help="seconds to wait for block after the ramp")
    parser.add_argument("--pause", type=float, default=1.0, help="mean idle seconds before each trial (default 1)")
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds for the server to become ready")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument(
        "--save-dir", default=str(ROOT / "bench" / "results"), help="where a copy of the JSON goes ('' for none)"
    )
    # The helper processes are this script: --role, --parent (the benchmark's pid) and their own arguments.
    parser.add_argument(
        "--role", choices=["main", "traffic", "gateway", "server"], default="main", help=argparse.SUPPRESS
    )
    parser.add_argument("--parent", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "main":
        if args.command:
            parser.error(f"unrecognized arguments: {' '.join(args.command)}")
        if args.trials < 1 or args.warmup_trials < 0 or args.calls_to_cross < 1:
            parser.error("--trials and --calls-to-cross must be >= 1, --warmup-trials >= 0")
        if args.rate <= 0 or args.input_tokens < 1:
            parser.error("--rate and --input-tokens must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role != "main":
        die_with_parent(args.parent)
    if args.role == "server":  # exec keeps the parent-death signal: the server goes when we go
        os.execv(args.command[0], args.command)
    if args.role == "traffic":
        return run_traffic(args.target)
    if args.role == "gateway":
        return run_gateway(args.api)

    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the `finally` below stops the server and the helpers.
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    errors: list[str] = []
    result: dict[str, Any] = {"host": {"cpus": os.cpu_count(), "loadavg_at_start": list(os.getloadavg())}}
    started_at = datetime.now(UTC)
    cleanups: list[Callable[[], None]] = []
    try:
        run(args, result, errors, cleanups)
    except KeyboardInterrupt as exc:
        errors.append(f"interrupted ({exc or 'SIGINT'})")
    except BenchError as exc:
        errors.append(str(exc))
    except Exception as exc:  # one JSON object whatever happens
        errors.append(f"{type(exc).__name__}: {exc}")
        log(traceback.format_exc())
    finally:
        # Cleanup is bounded (the server gets 30 s, then SIGKILL): a second signal must not cut it short
        # and leave the server or the temp store behind.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        # Newest first: the helpers and the observer, then the server, then the temp dir.
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as exc:
                errors.append(f"cleanup: {type(exc).__name__}: {exc}")
    result["host"]["loadavg_at_end"] = list(os.getloadavg())
    result["started_at"] = started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    result["seconds_total"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)
    headline = ("p50_seconds", "p99_seconds", "overspend_usd", "request_rate")
    ordered = {key: result[key] for key in headline if key in result}
    ordered.update({key: value for key, value in result.items() if key not in ordered and key != "host"})
    ordered["host"] = result["host"]
    ordered["ok"] = not errors
    ordered["errors"] = errors
    ordered["args"] = {key: str(value) if isinstance(value, Decimal) else value for key, value in vars(args).items()}
    text = json.dumps(ordered)
    print(text, flush=True)
    if args.save_dir:
        directory = Path(args.save_dir)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"caps-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json").write_text(text + "\n")
    for error in errors:
        log(f"FAILED: {error}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
