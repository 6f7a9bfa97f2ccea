"""OTLP/HTTP bodies: gzip and size limits, protobuf and JSON requests, responses in the request's
content type (opentelemetry-proto docs/specification.md)."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ..errors import DecodeError, PayloadTooLargeError, UnsupportedMediaTypeError

__all__ = [
    "JSON",
    "PROTOBUF",
    "decode_request",
    "decompress",
    "encode_response",
    "encode_status",
    "media_type",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = {"application/x-protobuf", "application/protobuf", "application/octet-stream"}
_ID_FIELDS = {
    "traceId": 16,
    "spanId": 8,
    "parentSpanId": 8,
    "trace_id": 16,
    "span_id": 8,
    "parent_span_id": 8,
}
_CHUNK = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
#: Third-party parser messages can quote the offending input (a 60 MB number): they are cut to this.
_MAX_DETAIL = 300


def _detail(error: BaseException) -> str:
    """A parser's message, cut in the middle: protobuf's nests "Failed to parse X field: " once per level,
    so the head says where and the tail says what."""
    text = str(error)
    if len(text) <= _MAX_DETAIL:
        return text
    half = _MAX_DETAIL // 2
    return f"{text[:half]} ... {text[-half:]}"


def media_type(content_type: str | None) -> str:
    """PROTOBUF or JSON for a Content-Type header; UnsupportedMediaTypeError otherwise."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in _PROTOBUF_TYPES:
        return PROTOBUF
    if kind == JSON:
        return JSON
    raise UnsupportedMediaTypeError(
        f"unsupported Content-Type {content_type!r}: send application/x-protobuf or application/json"
    )


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding; the size limit applies after decompression (a gzip bomb stops at `limit`).

    A gzip body may hold several members, one after another (RFC 1952 2.2; Go's reader, and so the
    Collector, reads them all): every member is read, never only the first. Anything else after the
    compressed data is refused, not ignored."""
    kind = (encoding or "identity").strip().lower()
    if kind in ("", "identity", "none"):
        return body
    if kind not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaTypeError(f"unsupported Content-Encoding {encoding!r}: send gzip or identity")
    gzipped = "gzip" in kind
    wbits = (zlib.MAX_WBITS | 16) if gzipped else zlib.MAX_WBITS
    out = bytearray()
    rest = body
    try:
        while True:
            inflater = zlib.decompressobj(wbits=wbits)
            data = inflater.decompress(rest, _CHUNK)
            while True:
                out += data
                if len(out) > limit:
                    raise PayloadTooLargeError(f"request is larger than {limit} bytes once decompressed")
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, _CHUNK)
            out += inflater.flush()
            if not inflater.eof:
                raise DecodeError(f"body is truncated {kind} data")
            rest = inflater.unused_data
            if not rest:
                break
            if not gzipped or not rest.startswith(_GZIP_MAGIC):
                raise DecodeError(f"body has {len(rest)} bytes of trailing data after the {kind} stream")
    except zlib.error as exc:
        raise DecodeError(f"body is not valid {kind}: {exc}") from exc
    if len(out) > limit:
        raise PayloadTooLargeError(f"request is larger than {limit} bytes once decompressed")
    return bytes(out)


def _hex_ids_to_base64(node: Any, path: str) -> None:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping expects base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            expected = _ID_FIELDS.get(key)
            if expected is not None and isinstance(value, str):
                if value == "":
                    continue
                try:
                    raw = bytes.fromhex(value)
                except ValueError:
                    raise DecodeError(f"{path}.{key} is not hex: {value[:40]!r}") from None
                node[key] = base64.b64encode(raw).decode("ascii")
            elif isinstance(value, dict | list):
                _hex_ids_to_base64(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _hex_ids_to_base64(item, f"{path}[{index}]")


def decode_request(body: bytes, kind: str) -> ExportTraceServiceRequest:
    """Parse an export; DecodeError (with a bounded message) for anything that is not one."""
    if kind == PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except (ProtobufDecodeError, ValueError) as exc:
            raise DecodeError(f"body is not a valid ExportTraceServiceRequest protobuf: {_detail(exc)}") from exc
    try:
        document = json.loads(body)
    except RecursionError as exc:
        raise DecodeError("body is not valid JSON: nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"body is not valid JSON: {_detail(exc)}") from exc
    if not isinstance(document, dict):
        raise DecodeError("body must be a JSON object with resourceSpans")
    try:
        _hex_ids_to_base64(document, "$")
    except RecursionError as exc:
        raise DecodeError("body is not a valid OTLP/JSON ExportTraceServiceRequest: nested too deeply") from exc
    try:
        request = ExportTraceServiceRequest()
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(f"body is not a valid OTLP/JSON ExportTraceServiceRequest: {_detail(exc)}") from exc
    except SystemError as exc:
        # upb raises SystemError (from a UnicodeEncodeError) for a field name or enum value holding a lone
        # surrogate such as "\ud800", which JSON can spell but UTF-8 cannot.
        cause = exc.__cause__ or exc.__context__
        if not isinstance(cause, UnicodeError):
            raise
        raise DecodeError(
            f"body is not a valid OTLP/JSON ExportTraceServiceRequest: a string is not valid Unicode ({_detail(cause)})"
        ) from exc
    return request


def encode_response(response: ExportTraceServiceResponse, kind: str) -> bytes:
    if kind == PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()


def encode_status(code: int, message: str, kind: str, details: list[Any] | None = None) -> bytes:
    """A google.rpc.Status error body, in the request's content type."""
    status = status_pb2.Status(code=code, message=message)
    for detail in details or []:
        status.details.add().Pack(detail)
    if kind == PROTOBUF:
        return status.SerializeToString()
    return json_format.MessageToJson(status, indent=None).encode()
