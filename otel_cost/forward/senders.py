"""One OTLP trace export to one downstream, over gRPC or HTTP, and what its answer means for a retry.

Synchronous on purpose: each endpoint has its own thread (`forwarder`), and gRPC's and httpx's
blocking calls release the GIL while they wait, so a slow downstream costs ingestion nothing.
Which answers are retryable follows the OTLP specification: gRPC UNAVAILABLE, CANCELLED,
DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE and DATA_LOSS, and RESOURCE_EXHAUSTED only with RetryInfo;
HTTP 429, 502, 503 and 504 (and a connection that failed). The server's RetryInfo or Retry-After
says how long to wait.
"""

from __future__ import annotations

import email.utils
import gzip
import ssl
import time
from pathlib import Path
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

import grpc
import httpx
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ..config import ClientTLSConfig, ForwardEndpointConfig

__all__ = ["Answer", "GrpcSender", "HttpSender", "Sender", "new_sender"]

_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: A server asking for a longer pause than this is waited for this long (then asked again).
MAX_SERVER_DELAY_SECONDS = 600.0


class Answer(NamedTuple):
    """What one attempt came to."""

    delivered: bool
    retry: bool  # not delivered, and worth sending again
    retry_after: float | None  # the server's requested pause (RetryInfo, Retry-After), if any
    rejected_spans: int  # delivered, but the server refused these (partial_success)
    error: str  # why it was not delivered, or the partial_success message


class Sender(Protocol):
    def send(self, payload: bytes) -> Answer: ...

    def close(self) -> None: ...


def new_sender(config: ForwardEndpointConfig) -> Sender:
    if config.protocol == "grpc":
        return GrpcSender(config)
    return HttpSender(config)


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def _delivered(body: bytes) -> Answer:
    try:
        response = ExportTraceServiceResponse.FromString(body)
    except Exception:
        return Answer(True, False, None, 0, "")
    partial = response.partial_success
    return Answer(True, False, None, int(partial.rejected_spans), partial.error_message)


class GrpcSender:
    def __init__(self, config: ForwardEndpointConfig) -> None:
        url = urlsplit(config.endpoint)
        target = f"{url.hostname}:{url.port or 4317}"
        if ":" in (url.hostname or ""):
            target = f"[{url.hostname}]:{url.port or 4317}"
        compression = grpc.Compression.Gzip if config.compression == "gzip" else grpc.Compression.NoCompression
        # gRPC's own reconnect backoff grows to 120 s: a downstream back from an outage would wait that
        # long for its backlog. Ours (retry_max_seconds) is the pace.
        reconnect_ms = int(config.retry_max_seconds * 1000)
        options = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.initial_reconnect_backoff_ms", min(1000, reconnect_ms)),
            ("grpc.min_reconnect_backoff_ms", min(1000, reconnect_ms)),
            ("grpc.max_reconnect_backoff_ms", reconnect_ms),
        ]
        if url.scheme == "https":
            tls = config.tls or ClientTLSConfig()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls.ca_file),
                private_key=_read(tls.key_file),
                certificate_chain=_read(tls.cert_file),
            )
            self._channel = grpc.secure_channel(target, credentials, options=options, compression=compression)
        else:
            self._channel = grpc.insecure_channel(target, options=options, compression=compression)
        self._export = self._channel.unary_unary(_EXPORT_METHOD, request_serializer=None, response_deserializer=None)
        self._metadata = tuple(config.headers.items())
        self._timeout = config.timeout_seconds

    def send(self, payload: bytes) -> Answer:
        try:
            body = self._export(payload, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            return _grpc_answer(error)
        return _delivered(body)

    def close(self) -> None:
        self._channel.close()


def _grpc_answer(error: grpc.RpcError) -> Answer:
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else "") or ""
    retry_after = None
    try:
        status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    except ValueError:  # a status detail inconsistent with the code: read as no detail
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after = min(info.retry_delay.ToTimedelta().total_seconds(), MAX_SERVER_DELAY_SECONDS)
    retry = code in _RETRYABLE_CODES or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is not None)
    return Answer(False, retry, retry_after, 0, f"gRPC {code.name}: {details}"[:1024])


class HttpSender:
    def __init__(self, config: ForwardEndpointConfig) -> None:
        url = urlsplit(config.endpoint)
        self._url = config.endpoint.rstrip("/") + "/v1/traces" if url.path in ("", "/") else config.endpoint
        verify: ssl.SSLContext | bool = True
        if url.scheme == "https" and config.tls is not None:
            tls = config.tls
            context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
            if tls.cert_file is not None and tls.key_file is not None:
                context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
            verify = context
        self._gzip = config.compression == "gzip"
        headers = {**config.headers, "content-type": "application/x-protobuf"}
        if self._gzip:
            headers["content-encoding"] = "gzip"
        self._client = httpx.Client(headers=headers, timeout=config.timeout_seconds, verify=verify)

    def send(self, payload: bytes) -> Answer:
        body = gzip.compress(payload, compresslevel=6) if self._gzip else payload
        try:
            response = self._client.post(self._url, content=body)
        except httpx.HTTPError as error:
            return Answer(False, True, None, 0, f"{type(error).__name__}: {error}"[:1024])
        status = response.status_code
        if 200 <= status < 300:
            return _delivered(response.content)
        retry = status in _RETRYABLE_STATUSES
        retry_after = _retry_after(response.headers.get("retry-after")) if retry else None
        text = response.text[:512] if response.content else ""
        return Answer(False, retry, retry_after, 0, f"HTTP {status}: {text}")

    def close(self) -> None:
        self._client.close()


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_SERVER_DELAY_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_SERVER_DELAY_SECONDS)
