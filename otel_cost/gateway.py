"""The gateway side of cap state: keep the enforcer's document fresh, answer `decide()` from memory.

A gateway (LiteLLM proxy, an API gateway plugin, a service's own client wrapper) holds one client per
process. The client long-polls `GET /v1/caps` with the document's ETag in the background, so a change
reaches it within milliseconds, and compiles each new document into an index; `decide()` then does
no I/O, takes no lock and costs a few microseconds:

    with CapsClient("http://otel-cost:8318", token=..., fail_mode="open") as caps:
        caps.wait_ready(5)
        decision = caps.decide({"team": "search", "environment": "prod"}, "claude-opus-4-8")
        if decision.action == "block": ...            # reject, e.g. HTTP 429 with decision.reasons
        model = decision.model                        # the requested model, or its downgrade

Semantics (DESIGN "Cap state document"): a cap matches a request when every dimension of its scope is
among the request's attributes with an equal value (`*` in a scope value matches any run of
characters); a dimension the request does not carry never matches. The `model` argument is the
request's `model` dimension. The most severe action among the matching caps wins (allow < alert <
downgrade < block); a downgrade cap whose map has no entry for the requested model changes nothing and
counts as an alert for that request. No matching cap: the document's `default_action`.

A document older than its `stale_after_seconds`, counted from when the client last received it or had
it confirmed (a 304), is not trusted: `fail_mode="open"` allows and `"closed"` blocks, with the reason
`stale cap state`. So does a client that has not received a document yet.

`CapsClient` polls from a daemon thread; `AsyncCapsClient` from an asyncio task (its blocking request
runs on a dedicated one-thread executor, so it never takes a thread of the loop's default pool). Both
share the HTTP exchange and the compiled state below; only the loop that drives them differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from . import __version__
from .errors import OtelCostError

__all__ = ["ACTIONS", "STALE_REASON", "Action", "AsyncCapsClient", "CapsClient", "CapsError", "Decision", "FailMode"]

logger = logging.getLogger(__name__)

Action = Literal["allow", "alert", "downgrade", "block"]
#: Actions by severity (the enforcer's order): a request gets the most severe among its matching caps.
ACTIONS: tuple[Action, ...] = ("allow", "alert", "downgrade", "block")
_SEVERITY: dict[str, int] = {action: index for index, action in enumerate(ACTIONS)}
_ALERT = _SEVERITY["alert"]
_DOWNGRADE = _SEVERITY["downgrade"]

FailMode = Literal["open", "closed"]
STALE_REASON = "stale cap state"

# Backoff after a failed poll: full jitter between half and all of min(cap, initial * 2**failures).
_BACKOFF_INITIAL_SECONDS = 0.25
_BACKOFF_MAX_SECONDS = 15.0
_MAX_BODY_BYTES = 64 * 1024 * 1024
_MAX_WAIT_SECONDS = 55.0  # the server holds a long poll no longer (api/caps.py MAX_WAIT_SECONDS)


class CapsError(OtelCostError):
    """No usable cap state: the server is unreachable, refused the token, or sent a malformed document."""

    retryable = True


class Decision(NamedTuple):
    """What a gateway does with one request."""

    action: Action
    model: str  # the model to call: the requested one, or its downgrade
    reasons: tuple[str, ...]  # why, one line per matching cap (or the stale-state reason)
    budgets: tuple[str, ...]  # names of the budgets whose caps matched (without allow caps)


class _Cap(NamedTuple):
    order: int  # position in the document: ties and downgrade choices follow the server's order
    budget: str
    severity: int
    line: str  # the reason line a match adds (a downgrade's, per model, is in `downgrade`)
    downgrade: Mapping[str, tuple[str, str]]  # requested model -> (cheaper model, reason line)
    reason: str
    # (dimension, exact value or None, compiled wildcard or None); the model's own condition apart
    conditions: tuple[tuple[str, str | None, re.Pattern[str] | None], ...]
    model: tuple[str | None, re.Pattern[str] | None] | None


def _pattern(value: str) -> tuple[str | None, re.Pattern[str] | None]:
    """A scope value as (exact, None) or (None, regex): only `*` is a wildcard, as in the enforcer's SQL."""
    if "*" not in value:
        return value, None
    return None, re.compile("(?s:" + ".*".join(re.escape(part) for part in value.split("*")) + r")\Z")


def _value_matches(condition: tuple[str | None, re.Pattern[str] | None], value: str) -> bool:
    exact, regex = condition
    if exact is not None:
        return value == exact
    assert regex is not None
    return regex.match(value) is not None


class _Compiled:
    """One document, indexed for `decide()`. Immutable once built: readers never need a lock."""

    __slots__ = ("_by_model", "_by_value", "_default", "_unindexed", "stale_after_seconds", "version")

    def __init__(self, document: Any, source: str) -> None:
        def bad(where: str, what: str) -> CapsError:
            return CapsError(f"malformed cap state document from {source}: {where}: {what}")

        if not isinstance(document, dict):
            raise bad("document", f"expected a JSON object (got {type(document).__name__})")
        version = document.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise bad("version", f"expected an integer (got {version!r})")
        stale = document.get("stale_after_seconds")
        if not isinstance(stale, int | float) or isinstance(stale, bool) or stale <= 0:
            raise bad("stale_after_seconds", f"expected a positive number (got {stale!r})")
        default = document.get("default_action", "allow")
        if default not in _SEVERITY:
            raise bad("default_action", f"expected one of {', '.join(ACTIONS)} (got {default!r})")
        caps = document.get("caps")
        if not isinstance(caps, list):
            raise bad("caps", f"expected a list (got {type(caps).__name__})")
        self.version: int = version
        self.stale_after_seconds = float(stale)
        self._default: Action = ACTIONS[_SEVERITY[default]]
        # Each cap is filed under one exact (dimension, value) of its scope, so a request looks at the
        # caps filed under its own attributes and the few that have no exact value: a thousand
        # per-agent caps cost a request one dict lookup, not a thousand comparisons.
        by_value: dict[tuple[str, str], list[_Cap]] = {}
        by_model: dict[str, list[_Cap]] = {}
        unindexed: list[_Cap] = []
        for index, raw in enumerate(caps):
            where = f"caps[{index}]"
            if not isinstance(raw, dict):
                raise bad(where, "expected a JSON object")
            budget, scope, action = raw.get("budget"), raw.get("scope", {}), raw.get("action")
            if not isinstance(budget, str) or not budget:
                raise bad(f"{where}.budget", f"expected a non-empty string (got {budget!r})")
            if action not in _SEVERITY:
                raise bad(f"{where}.action", f"expected one of {', '.join(ACTIONS)} (got {action!r})")
            if not isinstance(scope, dict) or not all(isinstance(v, str) for v in scope.values()):
                raise bad(f"{where}.scope", "expected an object of dimension -> string value")
            downgrade = raw.get("downgrade") or {}
            if not isinstance(downgrade, dict) or not all(isinstance(v, str) for v in downgrade.values()):
                raise bad(f"{where}.downgrade", "expected an object of model -> model")
            reason = raw.get("reason") or ""
            if not isinstance(reason, str):
                raise bad(f"{where}.reason", f"expected a string (got {reason!r})")
            if action == "allow":
                continue  # an allow cap cannot change any decision
            conditions = tuple((dim, *_pattern(value)) for dim, value in sorted(scope.items()) if dim != "model")
            model = _pattern(scope["model"]) if "model" in scope else None
            # Reason lines are written once here, not per request.
            line = f"{budget}: {action}: {reason}"
            replacements = {
                source: (target, f"{budget}: downgrade {source} -> {target}: {reason}")
                for source, target in downgrade.items()
                if target != source
            }
            cap = _Cap(index, budget, _SEVERITY[action], line, replacements, reason, conditions, model)
            if model is not None and model[0] is not None:
                by_model.setdefault(model[0], []).append(cap)
            else:
                key = next(((dim, exact) for dim, exact, _ in conditions if exact is not None), None)
                if key is None:
                    unindexed.append(cap)
                else:
                    by_value.setdefault(key, []).append(cap)
        self._by_value = {key: tuple(found) for key, found in by_value.items()}
        self._by_model = {key: tuple(found) for key, found in by_model.items()}
        self._unindexed = tuple(unindexed)

    def decide(self, attributes: Mapping[str, str], model: str) -> Decision:
        candidates = [*self._unindexed]
        by_value = self._by_value
        if by_value:
            for item in attributes.items():
                found = by_value.get(item)
                if found:
                    candidates += found
        found = self._by_model.get(model)
        if found:
            candidates += found
        if not candidates:
            return Decision(self._default, model, (), ())
        if len(candidates) > 1:
            candidates.sort()
        best = -1
        chosen = model
        reasons: list[str] = []
        budgets: list[str] = []
        for cap in candidates:
            if cap.model is not None and not _value_matches(cap.model, model):
                continue
            matched = True
            for dimension, exact, regex in cap.conditions:
                value = attributes.get(dimension)
                if value is None or (value != exact if regex is None else regex.match(value) is None):
                    matched = False
                    break
            if not matched:
                continue
            severity = cap.severity
            if severity == _DOWNGRADE:
                replacement = cap.downgrade.get(model)
                if replacement is None:
                    severity = _ALERT
                    reasons.append(
                        f"{cap.budget}: downgrade, but its map has no other model for {model!r} "
                        f"(treated as alert): {cap.reason}"
                    )
                else:
                    if best < _DOWNGRADE:  # the first downgrade in the server's order picks the model
                        chosen = replacement[0]
                    reasons.append(replacement[1])
            else:
                reasons.append(cap.line)
            if cap.budget not in budgets:
                budgets.append(cap.budget)
            best = max(best, severity)
        if best < 0:
            return Decision(self._default, model, (), ())
        return Decision(ACTIONS[best], chosen if best == _DOWNGRADE else model, tuple(reasons), tuple(budgets))


class _Exchange:
    """The state both clients share: the compiled document, when it was last confirmed, the ETag to
    send, and the one blocking HTTP exchange that refreshes them."""

    def __init__(
        self,
        url: str,
        token: str | None,
        fail_mode: str,
        wait_seconds: float,
        timeout_seconds: float,
    ) -> None:
        if fail_mode not in ("open", "closed"):
            raise ValueError(f"fail_mode must be 'open' or 'closed' (got {fail_mode!r})")
        if not 0 < wait_seconds <= _MAX_WAIT_SECONDS:
            raise ValueError(
                f"wait_seconds must be > 0 and <= {_MAX_WAIT_SECONDS:g}, the server's limit (got {wait_seconds!r})"
            )
        if not timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be > 0 (got {timeout_seconds!r})")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be the otel-cost API, e.g. http://otel-cost:8318 (got {url!r})")
        path = parts.path.rstrip("/")
        if not path.endswith("/v1/caps"):
            path += "/v1/caps"
        self.url = f"{parts.scheme}://{parts.netloc}{path}"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = path
        self._headers = {"Accept": "application/json", "User-Agent": f"otel-cost-gateway/{__version__}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.fail_action: Action = "allow" if fail_mode == "open" else "block"
        self.wait_seconds = float(wait_seconds)
        self.timeout_seconds = float(timeout_seconds)
        self.compiled: _Compiled | None = None
        self.confirmed_at = 0.0  # time.monotonic() of the last 200 or 304
        self.etag: str | None = None
        self.last_error: str | None = None
        self.failures = 0
        self.closed = False
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None

    def decide(self, attributes: Mapping[str, str], model: str) -> Decision:
        compiled = self.compiled
        if compiled is not None:
            age = time.monotonic() - self.confirmed_at
            if age <= compiled.stale_after_seconds:
                return compiled.decide(attributes, model)
            detail = (
                f"version {compiled.version} last confirmed {age:.1f}s ago "
                f"(stale after {compiled.stale_after_seconds:g}s)"
            )
        else:
            detail = f"no cap state received from {self.url} yet"
        if self.last_error:
            detail += f"; last error: {self.last_error}"
        return Decision(self.fail_action, model, (STALE_REASON, detail), ())

    def _wait(self) -> float:
        """How long the server may hold the next poll: never long enough for the document to go stale
        while a healthy server simply has nothing new to say."""
        compiled = self.compiled
        if compiled is None or self.etag is None:
            return 0.0
        return min(self.wait_seconds, compiled.stale_after_seconds / 2)

    def poll(self) -> float:
        """One request; returns how long to pause before the next. Raises CapsError."""
        wait = self._wait()
        headers = dict(self._headers)
        target = self._path
        if wait > 0:
            assert self.etag is not None
            headers["If-None-Match"] = self.etag
            target += f"?wait={wait:g}"
        started = time.monotonic()
        status, etag, body = self._request(target, headers, wait + self.timeout_seconds)
        if status == 304:
            if self.compiled is None:
                self.etag = None  # nothing to confirm: ask for the document itself
                return 0.0
            self.confirmed_at = time.monotonic()
            self._recovered()
            # A server (or a cache in front of it) that answers at once instead of holding the poll
            # must not turn this loop into a busy one.
            held = time.monotonic() - started
            return max(0.0, min(wait / 2, 1.0) - held)
        if status in (401, 403):
            raise CapsError(f"{self.url} answered {status}: the token is missing or not in api.read_tokens")
        if status != 200:
            raise CapsError(f"{self.url} answered HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise CapsError(f"malformed cap state document from {self.url}: not JSON ({exc})") from None
        compiled = _Compiled(document, self.url)
        self.compiled = compiled  # one reference swap: decide() sees the old or the new, never a mix
        self.confirmed_at = time.monotonic()
        self.etag = etag or f'W/"{compiled.version}"'
        self._recovered()
        self.ready.set()
        return 0.0

    def _request(self, target: str, headers: dict[str, str], timeout: float) -> tuple[int, str | None, bytes]:
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        with self._lock:
            if self.closed:
                raise CapsError("the client is closed")
            self._connection = connection
        try:
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
            body = response.read(_MAX_BODY_BYTES + 1)
            if len(body) > _MAX_BODY_BYTES:
                raise CapsError(f"{self.url} sent a document over {_MAX_BODY_BYTES} bytes")
            return response.status, response.getheader("ETag"), body
        except (OSError, http.client.HTTPException) as exc:
            if self.closed:
                raise CapsError("the client is closed") from None
            raise CapsError(f"cannot read {self.url}: {exc or type(exc).__name__}") from None
        finally:
            with self._lock:
                self._connection = None
            connection.close()

    def failed(self, exc: CapsError) -> float:
        """Record a failed poll; returns the backoff before the next one."""
        self.failures += 1
        if exc.message != self.last_error:  # log each new problem once, not every retry
            logger.warning("cap state: %s (retrying with backoff)", exc.message)
        self.last_error = exc.message
        ceiling = min(_BACKOFF_MAX_SECONDS, _BACKOFF_INITIAL_SECONDS * 2 ** (self.failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _recovered(self) -> None:
        if self.last_error is not None:
            logger.info("cap state: %s reachable again", self.url)
        self.failures = 0
        self.last_error = None

    def close(self) -> None:
        """Stop polling: abort a long poll in flight (its thread is blocked in recv)."""
        with self._lock:
            self.closed = True
            connection = self._connection
        sock = connection.sock if connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def not_ready(self, timeout_seconds: float) -> CapsError:
        return CapsError(
            f"no cap state from {self.url} within {timeout_seconds:g}s: {self.last_error or 'no answer yet'}"
        )


class _ClientBase:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        fail_mode: FailMode = "open",
        wait_seconds: float = 30.0,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._exchange = _Exchange(url, token, fail_mode, wait_seconds, timeout_seconds)

    @property
    def url(self) -> str:
        """The cap state URL polled (`.../v1/caps`)."""
        return self._exchange.url

    @property
    def version(self) -> int | None:
        """The version of the document held (None before the first one)."""
        compiled = self._exchange.compiled
        return None if compiled is None else compiled.version

    @property
    def last_error(self) -> str | None:
        """Why the last poll failed (None once a poll succeeds)."""
        return self._exchange.last_error

    def decide(self, attributes: Mapping[str, str], model: str) -> Decision:
        """The action for a request with these attributes (dimension -> value) asking for `model`.

        Answered from memory: no I/O, no lock, safe from any thread. `attributes` values must be
        strings; `model` is matched as the `model` dimension (an attributes entry `model` is ignored).
        """
        return self._exchange.decide(attributes, model)


class CapsClient(_ClientBase):
    """Keeps the cap state fresh from a daemon thread. Thread-safe.

    `url` is the otel-cost API (`http://host:8318`, `/v1/caps` appended unless given); `token` a bearer
    token from the server's `api.read_tokens`; `fail_mode` what `decide()` answers once the document is
    stale or before the first arrives; `wait_seconds` the longest a long poll is held (capped at half
    the document's `stale_after_seconds`); `timeout_seconds` for connecting and reading beyond that.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        fail_mode: FailMode = "open",
        wait_seconds: float = 30.0,
        timeout_seconds: float = 10.0,
    ) -> None:
        super().__init__(
            url, token=token, fail_mode=fail_mode, wait_seconds=wait_seconds, timeout_seconds=timeout_seconds
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CapsClient:
        """Start polling (idempotent); returns the client."""
        if self._stop.is_set():
            raise CapsError("the client is closed; create a new one")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="otel-cost-caps", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        exchange = self._exchange
        while not self._stop.is_set():
            try:
                pause = exchange.poll()
            except CapsError as exc:
                if self._stop.is_set():
                    break
                pause = exchange.failed(exc)
            except Exception:  # a bug must not end polling: the state would go stale silently
                logger.exception("cap state: unexpected error polling %s", exchange.url)
                pause = _BACKOFF_MAX_SECONDS
            if pause > 0:
                self._stop.wait(pause)

    def wait_ready(self, timeout_seconds: float) -> None:
        """Block until the first document arrives; CapsError (with the last error) after `timeout_seconds`."""
        if not self._exchange.ready.wait(timeout_seconds):
            raise self._exchange.not_ready(timeout_seconds)

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Stop polling (idempotent). `decide()` keeps answering: from the last document until it is
        stale, then by the fail mode."""
        self._stop.set()
        self._exchange.close()
        if self._thread is not None:
            self._thread.join(timeout_seconds)

    def __enter__(self) -> CapsClient:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class AsyncCapsClient(_ClientBase):
    """Keeps the cap state fresh from an asyncio task on the running loop; same options as `CapsClient`.

    `decide()` is a plain (non-async) method: it never waits.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        fail_mode: FailMode = "open",
        wait_seconds: float = 30.0,
        timeout_seconds: float = 10.0,
    ) -> None:
        super().__init__(
            url, token=token, fail_mode=fail_mode, wait_seconds=wait_seconds, timeout_seconds=timeout_seconds
        )
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    async def start(self) -> AsyncCapsClient:
        """Start polling on the running loop (idempotent); returns the client."""
        if self._closed:
            raise CapsError("the client is closed; create a new one")
        if self._task is None:
            # Its own thread: a long poll holds it for up to wait_seconds, which would otherwise be
            # taken from the loop's default executor that the application needs.
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="otel-cost-caps")
            self._task = asyncio.get_running_loop().create_task(self._run(), name="otel-cost-caps")
        return self

    async def _run(self) -> None:
        exchange = self._exchange
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                pause = await loop.run_in_executor(self._executor, exchange.poll)
            except CapsError as exc:
                if self._closed:
                    break
                pause = exchange.failed(exc)
            except Exception:  # a bug must not end polling: the state would go stale silently
                logger.exception("cap state: unexpected error polling %s", exchange.url)
                pause = _BACKOFF_MAX_SECONDS
            if pause > 0:
                await asyncio.sleep(pause)

    async def wait_ready(self, timeout_seconds: float) -> None:
        """Wait until the first document arrives; CapsError (with the last error) after `timeout_seconds`."""
        deadline = time.monotonic() + timeout_seconds
        while not self._exchange.ready.is_set():
            if time.monotonic() >= deadline:
                raise self._exchange.not_ready(timeout_seconds)
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        """Stop polling (idempotent); see `CapsClient.close`."""
        self._closed = True
        self._exchange.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> AsyncCapsClient:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()
