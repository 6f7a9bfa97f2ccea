"""Real OTLP trace receivers on loopback, standing in for the tracing backend otel-cost forwards to.

`TraceDownstream` is a gRPC server built from opentelemetry-proto's TraceService; `HttpDownstream` an
OTLP/HTTP endpoint (protobuf, gzip). Both record every request, its metadata or headers, and can be
told to refuse the next requests with a retryable or a permanent error; `TraceDownstream.stop` and
`start` take the port away and give it back (a real outage: connections are refused).
"""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass
class Refusal:
    code: grpc.StatusCode  # for gRPC; HTTP uses `http_status`
    http_status: int = 503
    retry_after_seconds: float | None = None


@dataclass
class Recorded:
    request: ExportTraceServiceRequest
    headers: dict[str, str]
    compressed: bool = False


@dataclass
class _Base:
    received: list[Recorded] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)  # the next requests are refused with these, in order
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list[Span]:
        with self.lock:
            return [
                span
                for recorded in self.received
                for resource_spans in recorded.request.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans
            ]

    def spans_by_id(self) -> dict[bytes, Span]:
        return {span.span_id: span for span in self.spans()}

    def _next_refusal(self) -> Refusal | None:
        with self.lock:
            self.attempts += 1
            return self.refusals.pop(0) if self.refusals else None

    def _record(self, request: ExportTraceServiceRequest, headers: dict[str, str], compressed: bool) -> None:
        with self.lock:
            self.received.append(Recorded(request, headers, compressed))


class TraceDownstream(_Base):
    def __init__(self, *, credentials: grpc.ServerCredentials | None = None) -> None:
        super().__init__()
        self.port = 0
        self._credentials = credentials
        self._server: grpc.Server | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        scheme = "https" if self._credentials is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> None:
        downstream = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: ExportTraceServiceRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
                refusal = downstream._next_refusal()
                if refusal is not None:
                    status = status_pb2.Status(code=refusal.code.value[0], message="refused by the test downstream")
                    if refusal.retry_after_seconds is not None:
                        info = error_details_pb2.RetryInfo(
                            retry_delay=Duration(
                                seconds=int(refusal.retry_after_seconds),
                                nanos=int(refusal.retry_after_seconds % 1 * 1e9),
                            )
                        )
                        status.details.add().Pack(info)
                    context.abort_with_status(rpc_status.to_status(status))
                metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
                downstream._record(request, metadata, "gzip" in metadata.get("grpc-encoding", ""))
                return ExportTraceServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
        address = f"127.0.0.1:{self.port}"
        if self._credentials is not None:
            self.port = server.add_secure_port(address, self._credentials)
        else:
            self.port = server.add_insecure_port(address)
        assert self.port, f"could not bind {address}"
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None


class HttpDownstream(_Base):
    def __init__(self) -> None:
        super().__init__()
        downstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                refusal = downstream._next_refusal()
                if refusal is not None:
                    self.send_response(refusal.http_status)
                    if refusal.retry_after_seconds is not None:
                        self.send_header("Retry-After", str(int(refusal.retry_after_seconds)))
                    payload = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="refused").SerializeToString()
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                compressed = self.headers.get("Content-Encoding") == "gzip"
                if compressed:
                    body = gzip.decompress(body)
                headers = {key.lower(): value for key, value in self.headers.items()}
                headers["path"] = self.path
                downstream._record(ExportTraceServiceRequest.FromString(body), headers, compressed)
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def attributes_of(span: Span) -> dict[str, Any]:
    """A span's attributes as a dict of plain values (the forwarded types kept: double stays float)."""
    values: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        values[kv.key] = getattr(kv.value, kind) if kind else None
    return values


def keys_of(span: Span) -> Iterator[str]:
    return (kv.key for kv in span.attributes)


class ByteCountingRelay:
    """A TCP relay on loopback in front of a downstream: counts the bytes clients send through it
    (what a compressed export really costs on the wire)."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.sent = 0
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: Any, target: Any, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                if counted:
                    self.sent += len(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
