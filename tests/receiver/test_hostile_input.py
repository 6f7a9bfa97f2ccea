"""Hostile and broken input (issue 8, part 4): bytes that are no export, exports that hold garbage, and
bodies built to hurt (gzip bombs, deep nesting, lone surrogates, enormous ids and attribute counts).

Every class ends in one of: a clear refusal (DecodeError -> INVALID_ARGUMENT / 400, PayloadTooLargeError
-> RESOURCE_EXHAUSTED / 413, UnsupportedMediaTypeError -> 415) or a partial_success whose message names
the span and the problem; a counter in /metrics (`otel_cost_spans_rejected_total{reason}`,
`otel_cost_outcomes_total{outcome="unrecognized"}`); no INTERNAL/500 and a server that keeps serving;
and nothing stored as spend that is garbage (no negative or absurd token count, no negative cost, an
invalid span not billed, no line the store refuses).

Many examples go through the decoders and the Pipeline directly (hypothesis, derandomized); a handful go
through a real server over real gRPC and HTTP, protobuf and JSON. Span-content classes at the
normalizer's level are in tests/semconv/test_hostile_normalizer.py.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import struct
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

from otel_cost.attribution import Attributor
from otel_cost.errors import DecodeError, PayloadTooLargeError, UnsupportedMediaTypeError
from otel_cost.pipeline import Pipeline, ProcessedExport
from otel_cost.pricing import PriceBook
from otel_cost.receiver.codec import JSON, PROTOBUF, decode_request, decompress, media_type
from otel_cost.receiver.status import MAX_MESSAGE_CHARS, refusal_for
from otel_cost.semconv import MAX_ATTRIBUTES, MAX_KEY_CHARS, MAX_TOKENS
from otel_cost.semconv.extract import MAX_NS, MIN_NS
from otel_cost.semconv.keys import FIELD_SOURCES
from otel_cost.semconv.outcomes import OutcomeReader
from otel_cost.store import Store
from otel_cost.store.wire import INGEST_COLUMNS, OUTCOME_COLUMNS

from ..helpers import NOW_NS, RunningServer, chat_attributes, key_values, make_request, make_span, wait_for

HOSTILE = settings(max_examples=150, deadline=None, derandomize=True, database=None)
SERVICE = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: What partial_success may say at most: 5 messages of a bounded reason each, plus the count.
MAX_PARTIAL_MESSAGE = 5 * 400 + 100


@cache
def pipeline() -> Pipeline:
    return Pipeline(PriceBook(), Attributor(), OutcomeReader())


# --- strategies: exports whose every field may be garbage --------------------------------------------

KEYS = sorted(
    {key for keys in FIELD_SOURCES.values() for key in keys}
    | {"gen_ai.operation.name", "gen_ai.request.model", "gen_ai.provider.name", "gen_ai.response.model"}
    | {"team", "app.team", "feature", "service.name", "gen_ai.agent.name", "otel_cost.outcome"}
    | {"deployment.environment", "api_key", "gen_ai.prompt.0.content", "metadata", "app.note"}
)
SCALARS = st.one_of(
    st.text(max_size=16).map(lambda text: AnyValue(string_value=text)),
    st.sampled_from(["gpt-4o", "claude-sonnet-4-5", "chat", "openai", "accepted", "1e400", "NaN", "-5", " 12 "]).map(
        lambda text: AnyValue(string_value=text)
    ),
    st.integers(INT64_MIN, INT64_MAX).map(lambda number: AnyValue(int_value=number)),
    st.sampled_from([INT64_MIN, -1, 0, 1200, MAX_TOKENS, MAX_TOKENS + 1, INT64_MAX]).map(
        lambda number: AnyValue(int_value=number)
    ),
    st.floats().map(lambda number: AnyValue(double_value=number)),
    st.booleans().map(lambda flag: AnyValue(bool_value=flag)),
    st.binary(max_size=16).map(lambda raw: AnyValue(bytes_value=raw)),
    st.just(AnyValue()),
)


def _array(values: list[AnyValue]) -> AnyValue:
    out = AnyValue()
    out.array_value.values.extend(values)
    return out


def _kvlist(items: list[tuple[str, AnyValue]]) -> AnyValue:
    out = AnyValue()
    out.kvlist_value.values.extend(KeyValue(key=key, value=value) for key, value in items)
    return out


KEY = st.sampled_from(KEYS) | st.text(max_size=8)
ANY_VALUE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3).map(_array) | st.lists(st.tuples(KEY, inner), max_size=3).map(_kvlist),
    max_leaves=8,
)
ATTRIBUTES = st.lists(st.tuples(KEY, ANY_VALUE), max_size=10)  # keys may repeat
GENAI = key_values(
    {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai"}
)
IDS = st.binary(max_size=20)
TIMES = st.sampled_from([0, 1, MIN_NS - 1, NOW_NS, MAX_NS, 2**64 - 1]) | st.integers(0, 2**64 - 1)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    span = Span(
        trace_id=draw(st.binary(min_size=16, max_size=16) | IDS),
        span_id=draw(st.binary(min_size=8, max_size=8) | IDS),
        parent_span_id=draw(st.binary(min_size=8, max_size=8) | IDS),
        name=draw(st.text(max_size=8)),
        start_time_unix_nano=draw(st.just(NOW_NS) | TIMES),
        end_time_unix_nano=draw(st.just(NOW_NS + 10**9) | TIMES),
    )
    if draw(st.booleans()):
        span.attributes.extend(GENAI)
    span.attributes.extend(KeyValue(key=key, value=value) for key, value in draw(ATTRIBUTES))
    span.status.code = draw(st.sampled_from([0, 1, 2, 7, -1]))  # type: ignore[assignment]  # an open enum
    span.status.message = draw(st.text(max_size=8))
    if draw(st.booleans()):
        event = span.events.add(name="gen_ai.evaluation.result", time_unix_nano=draw(TIMES))
        event.attributes.extend(KeyValue(key=key, value=value) for key, value in draw(ATTRIBUTES))
    return span


@st.composite
def requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(KeyValue(key=key, value=value) for key, value in draw(ATTRIBUTES))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = draw(st.sampled_from(["openlit", "ai", "opentelemetry.instrumentation.anthropic"]))
        scope_spans.scope.version = draw(st.text(max_size=6))
        scope_spans.spans.extend(draw(st.lists(spans(), max_size=4)))
    return request


# --- what every processed export must satisfy ------------------------------------------------------

TOKEN_COLUMNS = [index for index, name in enumerate(INGEST_COLUMNS) if name.endswith("_tokens")]
COLUMN = {name: index for index, name in enumerate(INGEST_COLUMNS)}


def lines_of(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8")  # strict: every line is valid UTF-8
    assert not text or text.endswith("\n")
    return [line.split("\t") for line in text.split("\n")[:-1]]


def check_processed(result: ProcessedExport) -> list[list[str]]:
    """The invariants of hostile input: sane lines for the store, every refusal counted and named."""
    rows = lines_of(result.data)
    assert len(rows) == result.rows <= result.spans - result.rejected
    billed = 0
    for fields in rows:
        assert len(fields) == len(INGEST_COLUMNS)
        for index in TOKEN_COLUMNS:
            assert fields[index].isdigit(), (INGEST_COLUMNS[index], fields[index])  # no "-", "nan", "inf"
            assert int(fields[index]) <= 2 * MAX_TOKENS
        assert fields[COLUMN["cost_units"]].isdigit()  # a whole number of 1e-24 USD, never negative
        assert MIN_NS <= int(fields[COLUMN["timestamp_ns"]]) < MAX_NS
        assert len(fields[COLUMN["trace_id"]]) == 32 and len(fields[COLUMN["span_id"]]) == 16
        assert len(fields[COLUMN["parent_span_id"]]) in (0, 16)
        assert fields[COLUMN["billable"]] in ("0", "1") and fields[COLUMN["priced"]] in ("0", "1")
        if fields[COLUMN["billable"]] == "1":
            billed += int(fields[COLUMN["cost_units"]])
    assert all(units >= 0 for units in result.spend.values())
    assert sum(result.spend.values()) == billed
    assert len(result.error_message) <= MAX_PARTIAL_MESSAGE
    assert bool(result.error_message) == bool(result.rejected)
    for fields in lines_of(result.outcomes):
        assert len(fields) == len(OUTCOME_COLUMNS)
        seconds = int(fields[0].split(".")[0])
        assert MIN_NS // 10**9 <= seconds < MAX_NS // 10**9  # a time the outcomes table can parse
    return rows


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as exporters write it: protobuf's JSON mapping, with ids in hex instead of base64."""
    document = json_format.MessageToDict(request)

    def hex_ids(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hex_ids(value)
        elif isinstance(node, list):
            for item in node:
                hex_ids(item)

    hex_ids(document)
    return json.dumps(document).encode()


# --- decoders: random, truncated and corrupted bytes -----------------------------------------------


@HOSTILE
@given(body=st.binary(max_size=600), kind=st.sampled_from([PROTOBUF, JSON]))
@example(body=b"\x0a\xff\xff\xff\xff\x0f", kind=PROTOBUF)  # a length past the end
@example(body=b"\x0a\x0b\x0a\x09\x0a\x07\x0a\x03abc\x12\x00", kind=PROTOBUF)
@example(body=b"[" * 100_000, kind=JSON)  # was a RecursionError out of json.loads (INTERNAL)
@example(body=b'{"a":' * 100_000, kind=JSON)
@example(body=b"\xff\xfe\x00", kind=JSON)
def test_random_bytes_are_an_export_or_a_decode_error(body: bytes, kind: str) -> None:
    try:
        request = decode_request(body, kind)
    except DecodeError as refused:
        assert refused.message.startswith("body ")
        assert len(refused.message) <= 500
        return
    check_processed(pipeline().process(request))


@settings(HOSTILE, max_examples=100)
@given(request=requests(), data=st.data())
def test_truncated_and_corrupted_exports_are_an_export_or_a_decode_error(
    request: ExportTraceServiceRequest, data: st.DataObject
) -> None:
    body = bytearray(request.SerializeToString())
    cut = data.draw(st.integers(0, len(body)), label="cut")
    damaged = bytearray(body[:cut])
    if damaged and data.draw(st.booleans(), label="flip"):
        at = data.draw(st.integers(0, len(damaged) - 1), label="at")
        damaged[at] ^= data.draw(st.integers(1, 255), label="bits")
    for candidate in (bytes(body), bytes(damaged)):
        try:
            decoded = decode_request(candidate, PROTOBUF)
        except DecodeError as refused:
            assert refused.message.startswith("body is not a valid ExportTraceServiceRequest protobuf: ")
            continue
        check_processed(pipeline().process(decoded))


@settings(HOSTILE, max_examples=100)
@given(request=requests())
def test_any_export_becomes_sane_lines_and_named_rejections_over_protobuf_and_json(
    request: ExportTraceServiceRequest,
) -> None:
    direct = pipeline().process(request)
    check_processed(direct)
    for message in direct.messages:
        assert message.startswith("span ")
        where, _, reason = message.partition(": ")
        assert reason and len(where) <= 60
    via_protobuf = pipeline().process(decode_request(request.SerializeToString(), PROTOBUF))
    via_json = pipeline().process(decode_request(otlp_json(request), JSON))
    for other in (via_protobuf, via_json):
        check_processed(other)
        assert (other.rows, other.rejected, other.messages, other.billable) == (
            direct.rows,
            direct.rejected,
            direct.messages,
            direct.billable,
        )


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(st.characters(codec=None), max_size=8)  # lone surrogates included: JSON can spell "\ud800"
    | st.sampled_from(["", "zz", "NaN", "Infinity", "1e400", "5b8efff798038103d269b633813fc60c", "-1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(st.characters(codec=None), max_size=6), inner),
    max_leaves=6,
)


CHAT_JSON_ATTRIBUTES = json.loads(otlp_json(make_request([make_span(chat_attributes())])))["resourceSpans"][0][
    "scopeSpans"
][0]["spans"][0]["attributes"]


def _maybe(data: st.DataObject, good: Any) -> Any:
    return good if data.draw(st.booleans()) else data.draw(JSON_VALUES)


@HOSTILE
@given(data=st.data())
@example(data=None)  # the lone surrogates below, which upb turned into a SystemError (INTERNAL)
def test_json_with_wrong_types_anywhere_is_an_export_or_a_decode_error(data: st.DataObject | None) -> None:
    if data is None:
        bodies = [
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "\\ud800"}]}]}]}',
            b'{"resourceSpans": [{"\\udfff": 1}]}',
            b'{"resourceSpans": [{"resource": {"attributes": [{"key": "\\ud800", "value": {"intValue": 1}}]}}]}',
        ]
    else:
        attribute = {"key": _maybe(data, "gen_ai.usage.input_tokens"), "value": _maybe(data, {"intValue": "12"})}
        span = {
            "traceId": _maybe(data, "5b8efff798038103d269b633813fc60c"),
            "spanId": _maybe(data, "eee19b7ec3c1b174"),
            "name": _maybe(data, "chat"),
            "kind": _maybe(data, 3),
            "startTimeUnixNano": _maybe(data, "1795991404000000000"),
            "endTimeUnixNano": _maybe(data, "1795991405000000000"),
            "attributes": _maybe(data, [*CHAT_JSON_ATTRIBUTES, attribute]),
            "status": _maybe(data, {"code": 2, "message": "boom"}),
        }
        document = {
            "resourceSpans": _maybe(
                data,
                [
                    {
                        "resource": _maybe(data, {"attributes": [{"key": "team", "value": {"stringValue": "x"}}]}),
                        "scopeSpans": _maybe(data, [{"scope": _maybe(data, {"name": "ai"}), "spans": [span]}]),
                    }
                ],
            )
        }
        bodies = [json.dumps(document).encode()]  # ensure_ascii: a lone surrogate travels as "\udXXX"
    for body in bodies:
        try:
            request = decode_request(body, JSON)
        except DecodeError as refused:
            assert refused.message.startswith(("body ", "$."))
            assert len(refused.message) <= 500
            refusal_for(refused).message.encode("utf-8")  # what the client is sent is valid UTF-8
            continue
        check_processed(pipeline().process(request))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "\\ud800"}]}]}]}', "a string is not valid Unicode"),
        (b'{"resourceSpans": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "body is not valid JSON: nested too deeply"),
        (
            b'{"resourceSpans": [{"resource": {"attributes": [{"key": "k", "value": '
            + b'{"arrayValue": {"values": [' * 150
            + b'{"intValue": 1}'
            + b"]}}" * 150
            + b"}]}}]}",
            "Message too deep. Max recursion depth is 100",
        ),
        (
            json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "9" * 1_000_000}]}]}]}),
            "Failed to parse startTimeUnixNano field",
        ),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "traceId is not hex: 'zz'"),
        (b'{"resourceSpans": 5}', "repeated field resourceSpans must be in []"),
    ],
)
def test_json_refusals_name_the_problem_in_a_bounded_message(body: bytes | str, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_request(body.encode() if isinstance(body, str) else body, JSON)
    assert message in caught.value.message
    assert len(caught.value.message) <= 500  # a 1 MB number used to be quoted whole


def test_protobuf_strings_that_are_not_utf8_are_a_decode_error() -> None:
    request = make_request([make_span(chat_attributes(**{"app.note": "\u00e9t\u00e9"}))])
    body = request.SerializeToString().replace("\u00e9t\u00e9".encode(), b"\xff\xfet\xc3\x28")
    with pytest.raises(DecodeError) as caught:
        decode_request(body, PROTOBUF)
    assert "String field had bad UTF-8" in caught.value.message


def test_anyvalue_nesting_past_protobufs_depth_limit_is_a_decode_error() -> None:
    # Built as bytes: the protobuf library refuses to build a message this deep itself.
    value = AnyValue(int_value=1).SerializeToString()
    for _ in range(200):
        array = b"\x0a" + _varint(len(value)) + value  # ArrayValue.values = 1
        value = b"\x2a" + _varint(len(array)) + array  # AnyValue.array_value = 5
    key_value = b"\x0a\x01k\x12" + _varint(len(value)) + value
    resource = b"\x0a" + _varint(len(key_value)) + key_value
    resource_spans = b"\x0a" + _varint(len(resource)) + resource
    with pytest.raises(DecodeError) as caught:
        decode_request(b"\x0a" + _varint(len(resource_spans)) + resource_spans, PROTOBUF)
    assert "MaxDepth" in caught.value.message


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def test_refusal_messages_are_cut_and_valid_utf8() -> None:
    refusal = refusal_for(DecodeError("x\ud800" + "y" * 100_000))
    assert len(refusal.message) == MAX_MESSAGE_CHARS + 3
    assert refusal.message.startswith("x?y")
    assert refusal_for(DecodeError("short")).message == "short"


# --- content types, content encodings and gzip bombs ---------------------------------------------


@HOSTILE
@given(content_type=st.none() | st.text(max_size=40))
@example(content_type="application/json; charset=utf-8")
@example(content_type=" APPLICATION/X-PROTOBUF ")
@example(content_type="application/jsonx")
def test_any_content_type_is_protobuf_json_or_415(content_type: str | None) -> None:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        found = media_type(content_type)
    except UnsupportedMediaTypeError as refused:
        assert kind not in ("application/x-protobuf", "application/protobuf", "application/octet-stream", JSON)
        assert refused.message == (
            f"unsupported Content-Type {content_type!r}: send application/x-protobuf or application/json"
        )
        assert refusal_for(refused).http_status == 415
        return
    assert found == (JSON if kind == JSON else PROTOBUF)


@HOSTILE
@given(encoding=st.text(max_size=20), body=st.binary(max_size=200))
@example(encoding="gzip, identity", body=b"")
@example(encoding="br", body=b"abc")
def test_any_content_encoding_is_decoded_or_refused(encoding: str, body: bytes) -> None:
    kind = encoding.strip().lower()
    try:
        out = decompress(body, encoding, limit=1024)
    except UnsupportedMediaTypeError as refused:
        assert kind not in ("", "identity", "none", "gzip", "x-gzip", "deflate")
        assert refused.message == f"unsupported Content-Encoding {encoding!r}: send gzip or identity"
        return
    except DecodeError as refused:  # random bytes are rarely gzip
        assert kind in ("gzip", "x-gzip", "deflate")
        assert refused.message.startswith("body ")
        return
    except PayloadTooLargeError:
        assert kind not in ("", "identity", "none")
        return
    assert out == body or kind in ("gzip", "x-gzip", "deflate")


@HOSTILE
@given(payload=st.binary(max_size=2000), data=st.data())
def test_truncated_gzip_is_a_decode_error(payload: bytes, data: st.DataObject) -> None:
    compressed = gzip.compress(payload)
    assert decompress(compressed, "gzip", limit=4096) == payload
    cut = data.draw(st.integers(0, len(compressed) - 1))
    with pytest.raises(DecodeError) as caught:
        decompress(compressed[:cut], "gzip", limit=4096)
    assert caught.value.message.startswith(("body is truncated gzip data", "body is not valid gzip: "))


def test_every_gzip_member_is_read_and_trailing_garbage_is_refused() -> None:
    first, second = make_request([make_span(chat_attributes())]), make_request([make_span(chat_attributes())])
    plain = first.SerializeToString() + second.SerializeToString()  # two protobuf messages concatenate
    members = gzip.compress(first.SerializeToString()) + gzip.compress(second.SerializeToString())
    # Only the first member used to be read: the second export's spans were dropped and acknowledged.
    assert decompress(members, "gzip", limit=1 << 20) == plain
    assert len(decode_request(decompress(members, "gzip", limit=1 << 20), PROTOBUF).resource_spans) == 2
    with pytest.raises(DecodeError) as caught:
        decompress(gzip.compress(plain) + b"garbage", "gzip", limit=1 << 20)
    assert caught.value.message == "body has 7 bytes of trailing data after the gzip stream"
    with pytest.raises(DecodeError) as caught:
        decompress(zlib.compress(plain) + b"\x1f\x8b", "deflate", limit=1 << 20)
    assert caught.value.message == "body has 2 bytes of trailing data after the deflate stream"
    with pytest.raises(PayloadTooLargeError):  # the limit covers every member together
        decompress(gzip.compress(bytes(600)) * 2, "gzip", limit=1000)


@cache
def gzip_bomb(size: int) -> bytes:
    """`size` zero bytes, gzipped (~1 KiB per MiB), built in a fraction of a second: a block that is
    fully flushed is self-contained, so one compressed MiB of zeros is repeated."""
    chunk = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + block * (size // len(chunk)) + compressor.flush() + struct.pack("<II", crc, size & 0xFFFFFFFF)


def test_a_one_gib_gzip_bomb_stops_at_the_limit_in_bounded_memory() -> None:
    bomb = gzip_bomb(1 << 30)
    assert len(bomb) < 1_100_000
    limit = 64 * 1024 * 1024  # receiver.max_request_bytes' default
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLargeError) as caught:
            decompress(bomb, "gzip", limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.message == f"request is larger than {limit} bytes once decompressed"
    assert peak < 2 * limit  # not 1 GiB: inflating stops just past the limit


# --- the pipeline: outcomes, resources, ids ---------------------------------------------------------


@pytest.mark.parametrize("end_ns", [0, 1_000_000_000, MIN_NS - 1, MAX_NS, 2**64 - 1])
def test_an_outcome_at_a_garbage_time_is_counted_unrecognized_not_stored(end_ns: int) -> None:
    span = make_span({"otel_cost.outcome": "accepted"})
    span.start_time_unix_nano = span.end_time_unix_nano = end_ns
    judged = make_span({})
    judged.start_time_unix_nano = judged.end_time_unix_nano = end_ns
    judged.events.add(name="gen_ai.evaluation.result", time_unix_nano=end_ns).attributes.extend(
        key_values({"gen_ai.evaluation.score.label": "pass"})
    )
    result = pipeline().process(make_request([span, judged]))
    # "0.000000000" was a line the outcomes table refuses: the batch, and every one after it, stuck.
    assert (result.outcome_rows, result.unrecognized_outcomes) == (0, 2)
    good = pipeline().process(make_request([make_span({"otel_cost.outcome": "accepted"})]))
    assert (good.outcome_rows, good.unrecognized_outcomes) == (1, 0)


def test_a_resource_with_enormous_attribute_counts_or_keys_refuses_its_spans() -> None:
    many = {f"resource.extra.{index}": index for index in range(MAX_ATTRIBUTES + 1)}
    result = pipeline().process(make_request([make_span(chat_attributes()) for _ in range(3)], resource=many))
    assert (result.rows, result.rejected, result.spans) == (0, 3, 3)
    assert result.messages[0].endswith(
        f": its resource has {MAX_ATTRIBUTES + 1} attributes (at most {MAX_ATTRIBUTES} are read)"
    )
    long_key = {"service.name": "svc", "k" * (MAX_KEY_CHARS + 1): "v"}
    result = pipeline().process(make_request([make_span(chat_attributes())], resource=long_key))
    assert result.rejected == 1
    assert result.messages[0].endswith(
        f"its resource has an attribute key of {MAX_KEY_CHARS + 1} characters (at most {MAX_KEY_CHARS})"
    )


def test_an_enormous_span_id_is_named_in_a_bounded_message() -> None:
    span = make_span(chat_attributes(), span_id=b"\xab" * 1_000_000)
    result = pipeline().process(make_request([span]))
    assert result.error_message == (
        f"1 span(s) rejected: span {'ab' * 16}...: invalid span_id (must be 8 bytes, not all zero)"
    )  # the whole id in hex was 2 MB, past gRPC's 4 MiB response limit at two of them


# --- the store takes every line the pipeline makes -------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one store for every example, on purpose
)
@given(request=requests())
def test_the_store_accepts_every_line_the_pipeline_makes_of_hostile_input(
    store: Store, request: ExportTraceServiceRequest
) -> None:
    result = pipeline().process(request)
    check_processed(result)
    before = store.query("SELECT count() FROM requests").scalar()
    token = uuid.uuid4().hex
    store.insert_batch(result.data, token)  # a refused line would wedge every batch behind it
    store.insert_outcomes(result.outcomes, token)
    assert store.query("SELECT count() FROM requests").scalar() == before + result.rows
    assert store.query("SELECT countIf(cost < 0) FROM requests").scalar() == 0


# --- the real server --------------------------------------------------------------------------------


def post(
    server: RunningServer, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{server.http_url}/v1/traces",
        data=body,
        headers={"Content-Type": content_type, **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def status_message(payload: bytes, content_type: str) -> str:
    if content_type == PROTOBUF:
        return str(status_pb2.Status.FromString(payload).message)
    return str(json_format.Parse(payload, status_pb2.Status()).message)


def raw_export(server: RunningServer, body: bytes, **options: Any) -> grpc.RpcError:
    with grpc.insecure_channel(server.grpc_target, **options) as channel:
        call = channel.unary_unary(SERVICE, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as caught:
            call(body, timeout=30)
    return caught.value


def export(server: RunningServer, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary(
            SERVICE,
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        response: ExportTraceServiceResponse = call(request, timeout=30)
    return response


def scrape(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"{server.api_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def rejected(server: RunningServer) -> dict[str, float]:
    """otel_cost_spans_rejected_total by reason, from /metrics."""
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in scrape(server).items()
        if name == "otel_cost_spans_rejected_total"
    }


def assert_still_serving(server: RunningServer) -> None:
    span = make_span(chat_attributes())
    assert not export(server, make_request([span])).HasField("partial_success")
    assert server.scalar(f"SELECT count() FROM requests WHERE span_id = '{span.span_id.hex()}'") == 1
    assert "internal" not in rejected(server)  # nothing hostile came out as INTERNAL / 500


def hostile_spans() -> tuple[list[Span], list[str]]:
    """One good call and a span of every class of garbage content; what partial_success says of each."""
    good = make_span(chat_attributes())
    hostile = [
        (make_span(chat_attributes(**{"gen_ai.usage.input_tokens": -5})), "gen_ai.usage.input_tokens is negative (-5)"),
        (
            make_span(chat_attributes(**{"gen_ai.usage.output_tokens": INT64_MAX})),
            f"gen_ai.usage.output_tokens is implausibly large ({INT64_MAX} > {MAX_TOKENS})",
        ),
        (
            make_span(chat_attributes(**{"gen_ai.usage.input_tokens": float("nan")})),
            "gen_ai.usage.input_tokens is not a whole number (nan)",
        ),
        (
            make_span(chat_attributes(**{"gen_ai.usage.input_tokens": "1e400"})),
            "gen_ai.usage.input_tokens is not a whole number ('1e400')",
        ),
        (
            make_span(chat_attributes(**{"gen_ai.usage.output_tokens": b"\x01"})),
            "gen_ai.usage.output_tokens is not a number (bytes)",
        ),
        (
            make_span(chat_attributes(**{"gen_ai.usage.output_tokens": {"nested": [1, {"deeper": 2}]}})),
            "gen_ai.usage.output_tokens is not a number (dict)",
        ),
        (make_span(chat_attributes(), trace_id=b"\x01" * 15), "invalid trace_id (must be 16 bytes, not all zero)"),
        (
            make_span(chat_attributes(**{f"app.extra.{index}": index for index in range(MAX_ATTRIBUTES)})),
            f"has {MAX_ATTRIBUTES + len(chat_attributes())} attributes (at most {MAX_ATTRIBUTES} are read)",
        ),
    ]
    short_span = make_span(chat_attributes())
    short_span.span_id = b"\x07\x07\x07"
    hostile.append((short_span, "invalid span_id (must be 8 bytes, not all zero)"))
    return [good] + [span for span, _ in hostile], [f"span {span.span_id.hex()}: {reason}" for span, reason in hostile]


def check_partial_success(response: ExportTraceServiceResponse, expected: list[str]) -> None:
    partial = response.partial_success
    assert partial.rejected_spans == len(expected)
    assert partial.error_message.startswith(f"{len(expected)} span(s) rejected: ")
    assert partial.error_message.endswith(f"; and {len(expected) - 5} more")
    for message in expected[:5]:  # the first five are spelled out
        assert message in partial.error_message


def test_hostile_spans_over_grpc_and_http_are_partial_success_and_only_valid_calls_are_billed(
    server: RunningServer,
) -> None:
    stored: list[str] = []
    # An enormous value (8 MiB, under the request limit) is no reason to refuse a call: billed, stored cut.
    enormous = make_span(chat_attributes(**{"app.note": "x" * (8 << 20)}))
    for transport in ("grpc", PROTOBUF, JSON):
        spans, expected = hostile_spans()
        # A usage key sent twice with two values: stored (last value), flagged as contradictory.
        repeated = make_span(chat_attributes())
        repeated.attributes.append(KeyValue(key="gen_ai.usage.output_tokens", value=AnyValue(int_value=7)))
        request = make_request([*spans, repeated])
        if transport == "grpc":
            request.resource_spans[0].scope_spans[0].spans.append(enormous)
            stored.append(enormous.span_id.hex())
            response = export(server, request)
        else:
            body = request.SerializeToString() if transport == PROTOBUF else otlp_json(request)
            status, payload = post(server, body, transport)
            assert status == 200
            response = (
                ExportTraceServiceResponse.FromString(payload)
                if transport == PROTOBUF
                else json_format.Parse(payload, ExportTraceServiceResponse())
            )
        check_partial_success(response, expected)
        stored += [spans[0].span_id.hex(), repeated.span_id.hex()]
    rows = server.query(
        "SELECT span_id, input_tokens, output_tokens, toString(cost), billable, has(flags, "
        "'repeated_attribute_conflict') FROM requests ORDER BY span_id"
    ).rows
    assert sorted(row[0] for row in rows) == sorted(stored)  # no invalid span was stored, let alone billed
    for _span_id, input_tokens, output_tokens, cost, billable, conflict in rows:
        assert (input_tokens, billable, cost.startswith("0.")) == (1200, 1, True)
        assert (output_tokens, conflict) in ((300, 0), (7, 1))
    assert rejected(server)["invalid"] == 3 * len(hostile_spans()[1])
    note = f"SELECT length(attributes['app.note']) FROM requests WHERE span_id = '{enormous.span_id.hex()}'"
    assert server.scalar(note) == 256 + len("…".encode())
    assert_still_serving(server)


def test_undecodable_bodies_are_refused_with_their_status_and_counted(server: RunningServer) -> None:
    error = raw_export(server, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ExportTraceServiceRequest protobuf" in str(error.details())
    bad_utf8 = make_request([make_span(chat_attributes(**{"app.note": "\u00e9t\u00e9"}))]).SerializeToString()
    bad_utf8 = bad_utf8.replace("\u00e9t\u00e9".encode(), b"\xff\xfet\xc3\x28")
    assert raw_export(server, bad_utf8).code() == grpc.StatusCode.INVALID_ARGUMENT
    cases = [
        (bad_utf8, PROTOBUF, {}, 400, "String field had bad UTF-8"),
        # these two came out as 500 "internal error" (SystemError, RecursionError)
        (b'{"resourceSpans": [{"\\ud800": 1}]}', JSON, {}, 400, "a string is not valid Unicode"),
        (b"[" * 100_000, JSON, {}, 400, "body is not valid JSON: nested too deeply"),
        (b'{"resourceSpans": [{"scopeSpans": "x"}]}', JSON, {}, 400, "Failed to parse scopeSpans field"),
        (b"{}", "text/plain", {}, 415, "unsupported Content-Type 'text/plain'"),
        (b"{}", JSON, {"Content-Encoding": "zstd"}, 415, "unsupported Content-Encoding 'zstd'"),
        (gzip.compress(b"{}") + b"junk", JSON, {"Content-Encoding": "gzip"}, 400, "4 bytes of trailing data"),
        (gzip.compress(b"{}")[:-3], JSON, {"Content-Encoding": "gzip"}, 400, "body is truncated gzip data"),
    ]
    for body, content_type, headers, expected_status, message in cases:
        status, payload = post(server, body, content_type, headers)
        assert status == expected_status, (message, payload)
        assert message in status_message(payload, content_type if content_type in (PROTOBUF, JSON) else JSON)
    counted = rejected(server)
    assert (counted["decode"], counted["media_type"]) == (2 + 6, 2)
    assert_still_serving(server)


def test_a_client_that_disconnects_mid_body_is_a_decode_refusal_not_internal(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"\x0a" * 10
        )
        time.sleep(0.2)  # the server reads the first bytes, then the connection ends
    # ClientDisconnect used to escape as "export failed unexpectedly", counted as internal
    wait_for(lambda: rejected(server).get("decode") == 1, what="the truncated body counted")
    assert_still_serving(server)


@contextmanager
def peak_rss_growth() -> Iterator[Callable[[], int]]:
    """Sample this process's resident set (the server runs in it) while the block runs: its growth."""
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc")
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page

    start, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: max(peak[0], rss()) - start
    finally:
        done.set()
        sampler.join()


def test_gzip_bombs_are_refused_after_decompression_in_bounded_memory(
    make_server: Callable[..., RunningServer],
) -> None:
    limit = 4 * 1024 * 1024
    server = make_server({"receiver": {"max_request_bytes": limit}})
    bomb = gzip_bomb(1 << 30)  # 1 GiB of zeros in ~1 MiB: passes the size check on the wire
    with peak_rss_growth() as growth:
        status, payload = post(server, bomb, PROTOBUF, {"Content-Encoding": "gzip"})
        assert status == 413
        assert status_message(payload, PROTOBUF) == f"request is larger than {limit} bytes once decompressed"
        assert growth() < 256 * 1024 * 1024  # inflating the whole bomb would have taken 1 GiB
    assert rejected(server)["too_large"] == 1
    # gRPC: grpc's own limit applies to the decompressed message too (and grpc answers before our
    # handler runs, so this refusal is not in otel_cost_spans_rejected_total).
    error = raw_export(server, bytes(64 * 1024 * 1024), compression=grpc.Compression.Gzip)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Decompressed message larger than max" in str(error.details())
    # a body of several gzip members, as Go's gzip writer may send: every span of every member is stored
    first, second = make_span(chat_attributes()), make_span(chat_attributes())
    members = gzip.compress(make_request([first]).SerializeToString()) + gzip.compress(
        make_request([second]).SerializeToString()
    )
    assert post(server, members, PROTOBUF, {"Content-Encoding": "gzip"})[0] == 200
    assert server.scalar("SELECT count() FROM requests") == 2
    assert_still_serving(server)


def test_an_outcome_at_a_garbage_time_does_not_wedge_the_store(server: RunningServer) -> None:
    garbage = make_span({"otel_cost.outcome": "accepted"}, start_ns=0, duration_ns=0)  # no timestamps at all
    assert not export(server, make_request([garbage, make_span(chat_attributes())])).HasField("partial_success")
    good = make_span({"otel_cost.outcome": "accepted"})
    export(server, make_request([good, make_span(chat_attributes())]))
    # The garbage outcome's line was refused by the outcomes table: that batch, and every batch after it,
    # went to the spool and stayed there. Now it is counted unrecognized and everything else lands.
    assert server.query("SELECT span_id FROM outcomes").rows == [[good.span_id.hex()]]
    assert server.scalar("SELECT count() FROM requests") == 2
    samples = scrape(server)
    assert samples[("otel_cost_outcomes_total", frozenset({("outcome", "unrecognized")}))] == 1
    assert samples[("otel_cost_outcomes_total", frozenset({("outcome", "accepted")}))] == 1
    assert_still_serving(server)
