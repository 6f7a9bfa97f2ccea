"""`otel-cost serve`: the receivers, the pipeline, the writer and the API in one process.

server = Server(config)
await server.start()        # binds every port or raises ListenError / StoreError
...
await server.stop()         # stops accepting, finishes in-flight exports, closes the store
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import grpc
import uvicorn

from .alerts.engine import Alerter
from .api import api_app
from .config import Config, parse_endpoint
from .dedup import RecentSpans
from .enforcer import Enforcer
from .enforcer.webhooks import WebhookSender
from .errors import ListenError
from .forward.enrich import ForwardOptions
from .forward.forwarder import Forwarder
from .forward.metrics import CostMetrics
from .ingest import Ingestor
from .metrics import Metrics
from .receiver import BearerTokens, add_trace_service, otlp_http_app
from .receiver.admission import InflightBytes
from .review import RatesPublisher
from .store import BatchWriter, Store, open_store
from .store.spool import Spool
from .workers import PipelinePool

__all__ = ["EmbeddedUvicorn", "Server", "caps_snapshot", "listen"]

logger = logging.getLogger(__name__)


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our event loop: the process's signals are ours, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(endpoint: str, what: str, setting: str) -> socket.socket:
    host, port = parse_endpoint(endpoint)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(_listen_message(endpoint, what, setting, exc)) from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _listen_message(endpoint: str, what: str, setting: str, exc: OSError | None) -> str:
    if exc is None or exc.errno == errno.EADDRINUSE:
        reason = "the address is already in use (another otel-cost, or an OpenTelemetry Collector?)"
    elif exc.errno == errno.EACCES:
        reason = "permission denied (ports below 1024 need privileges)"
    else:
        reason = exc.strerror or str(exc)
    return f"cannot listen on {endpoint} for {what}: {reason}. Choose another address with {setting}."


class Server:
    def __init__(
        self, config: Config, *, store: Store | None = None, clock: Callable[[], datetime] | None = None
    ) -> None:
        """`clock` (default: the real UTC time) is what the enforcer and the alerts call "now"."""
        self.config = config
        self.clock = clock
        self._given_store = store
        self.store: Store | None = store
        self.metrics = Metrics()
        self.grpc_port = 0
        self.http_port = 0
        self.api_port = 0
        self._ready = False
        self._grpc: grpc.aio.Server | None = None
        self._uvicorns: list[tuple[EmbeddedUvicorn, asyncio.Task[None]]] = []
        self._writer: BatchWriter | None = None
        self._spool: Spool | None = None
        self._pool: PipelinePool | None = None
        self.enforcer: Enforcer | None = None
        self.alerter: Alerter | None = None
        self._webhooks: WebhookSender | None = None
        self._rates: RatesPublisher | None = None
        self.forwarder: Forwarder | None = None
        self.cost_metrics: CostMetrics | None = None
        self._sockets: list[socket.socket] = []
        self._stopped = False

    @property
    def ready(self) -> bool:
        return self._ready

    def _on_refusal(self, reason: str, count: int) -> None:
        self.metrics.spans_rejected.labels(reason).inc(count)

    async def start(self) -> None:
        config = self.config
        try:
            await self._start(config)
        except BaseException:
            await self.stop(grace_seconds=0)
            raise

    async def _start(self, config: Config) -> None:
        # Ports first: a busy port fails in milliseconds, before the store and the workers start.
        http_sock = listen(config.receiver.http_endpoint, "OTLP/HTTP", "receiver.http_endpoint / --http-endpoint")
        self._sockets.append(http_sock)
        api_sock = listen(config.api.endpoint, "the API", "api.endpoint / --api-endpoint")
        self._sockets.append(api_sock)
        self.http_port = http_sock.getsockname()[1]
        self.api_port = api_sock.getsockname()[1]

        if self.store is None:
            self.store = await asyncio.to_thread(open_store, config.store.url)
        store = self.store
        self._spool = await asyncio.to_thread(Spool, config.store.spool_path, config.store.spool_max_bytes)
        self._writer = self._new_writer(store, self._spool)
        if self._spool:
            # Batches an earlier process journaled: finish their inserts (rollups included) before
            # anything reads the store; if the store refuses, they drain once it answers.
            replayed = len(self._spool)
            if await asyncio.to_thread(self._writer.wait_for_spool, config.store.insert_timeout_seconds * 2):
                logger.info("replayed %d batches from the spool at %s", replayed, config.store.spool_path)
        recent = RecentSpans(config.store.dedup_keys)
        if config.store.dedup_window_seconds:
            await asyncio.to_thread(recent.preload, store, config.store.dedup_window_seconds)
        for entry in self._spool.entries():  # still waiting for the store: their spans are not new
            loaded = await asyncio.to_thread(self._spool.read, entry)
            if loaded is not None:
                recent.remember_wire(loaded[0])
        enforcer = self.enforcer = Enforcer(store, config, clock=self.clock, metrics=self.metrics)
        self.metrics.track_caps(lambda: caps_snapshot(enforcer))
        if config.gateways:
            self._webhooks = WebhookSender(config.gateways)
            enforcer.state.on_change(self._webhooks.notify)
        if config.alerts.enabled:
            self.alerter = Alerter(store, config, metrics=self.metrics, clock=self.clock)
            self.alerter.attach(enforcer)
            await asyncio.to_thread(self.alerter.start)  # the ledger first: no repeats, no losses after a restart
        if config.budgets:
            await asyncio.to_thread(enforcer.poll_once)  # gateways never see an empty state from a live server

        if config.metrics_export.endpoint:
            self.cost_metrics = CostMetrics(config.metrics_export)
            self.cost_metrics.track_caps(lambda: caps_snapshot(enforcer))
            enforcer.state.on_change(self.cost_metrics.on_cap_change)
        enforcer.start()
        self._rates = RatesPublisher(store, config)
        self._rates.start()  # the review's list prices (model_rates): on start, then every few minutes
        self.metrics.track_pending(lambda: self._writer.pending_rows if self._writer else 0)
        if config.forward.endpoints:
            self.forwarder = Forwarder(config.forward.endpoints, self.metrics)
            self.forwarder.start()
        forward = ForwardOptions(
            spans=self.forwarder is not None,
            drop_content=config.forward.drop_content,
            gen_ai_usage_cost=config.forward.gen_ai_usage_cost,
            usage=self.cost_metrics is not None,
        )
        self._pool = PipelinePool(
            config.receiver.workers, config.pricing.overrides, config.attribution, config.outcomes, forward
        )
        await self._pool.start()
        self.metrics.track_workers(lambda: self._pool.pids if self._pool else [])
        inflight = InflightBytes(config.receiver.max_inflight_bytes)
        self.metrics.track_inflight(lambda: inflight.used)
        ingestor = Ingestor(
            self._pool,
            recent,
            self._writer,
            self.metrics,
            inflight,
            forwarder=self.forwarder,
            on_usage=self.cost_metrics.record if self.cost_metrics is not None else None,
        )
        ingest_tokens = BearerTokens(config.receiver.bearer_tokens)
        tls = config.receiver.tls

        max_bytes = config.receiver.max_request_bytes
        self._grpc = grpc.aio.server(
            maximum_concurrent_rpcs=config.receiver.max_concurrent_exports,
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        add_trace_service(self._grpc, ingestor.consume, ingest_tokens, self._on_refusal)
        endpoint = config.receiver.grpc_endpoint
        try:
            if tls is not None:
                credentials = grpc.ssl_server_credentials([(tls.key_file.read_bytes(), tls.cert_file.read_bytes())])
                self.grpc_port = self._grpc.add_secure_port(endpoint, credentials)
            else:
                self.grpc_port = self._grpc.add_insecure_port(endpoint)
        except RuntimeError as exc:
            raise ListenError(
                _listen_message(endpoint, "OTLP/gRPC", "receiver.grpc_endpoint / --grpc-endpoint", None)
            ) from exc
        if not self.grpc_port and not endpoint.endswith(":0"):
            raise ListenError(_listen_message(endpoint, "OTLP/gRPC", "receiver.grpc_endpoint / --grpc-endpoint", None))
        await self._grpc.start()

        http_app = otlp_http_app(ingestor.consume, ingest_tokens, max_bytes, self._on_refusal, inflight)
        api = api_app(
            store,
            self.metrics,
            BearerTokens(config.api.read_tokens),
            lambda: self._ready,
            config=config,
            caps=enforcer.state,
            clock=self.clock,
        )
        tls_options: dict[str, Any] = {}
        if tls is not None:
            tls_options = {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}
        self._serve(http_app, http_sock, tls_options)
        api_tls = config.api.tls  # tokens to the API are not sent in clear
        api_options: dict[str, Any] = {}
        if api_tls is not None:
            api_options = {"ssl_certfile": str(api_tls.cert_file), "ssl_keyfile": str(api_tls.key_file)}
        self._serve(api, api_sock, api_options)
        for server, task in self._uvicorns:
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if task.done():
                task.result()
        self._ready = True
        logger.info(
            "otel-cost serving: OTLP/gRPC :%d, OTLP/HTTP :%d, API :%d, store %s",
            self.grpc_port,
            self.http_port,
            self.api_port,
            store.url,
        )

    def _new_writer(self, store: Store, spool: Spool) -> BatchWriter:
        def flushed(rows: int, seconds: float) -> None:
            self.metrics.on_flush(rows, seconds)
            if self.enforcer is not None:
                self.enforcer.nudge()  # new spend is queryable: evaluate budgets now, not at the next tick
            if self._rates is not None:
                self._rates.nudge()  # and a model first seen gets its list prices for the review

        config = self.config.store
        self.metrics.track_spool(lambda: len(spool), lambda: spool.size)
        return BatchWriter(
            store,
            max_batch_rows=config.batch_size,
            max_pending_rows=config.queue_size,
            max_delay_millis=config.flush_interval_millis,
            insert_timeout_seconds=config.insert_timeout_seconds,
            max_drain_backoff_seconds=config.spool_retry_max_seconds,
            spool=spool,
            on_flush=flushed,
            on_spool=lambda event: self.metrics.spool_events.labels(event).inc(),
        )

    def _serve(self, app: Any, sock: socket.socket, options: dict[str, Any]) -> None:
        config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning", access_log=False, **options)
        server = EmbeddedUvicorn(config)
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        self._uvicorns.append((server, task))

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting, let in-flight exports finish (up to `grace_seconds`), close the store. Idempotent."""
        if self._stopped:
            logger.debug("server already stopped, ignoring call")
            return
        self._stopped = True
        self._ready = False
        if self._grpc is not None:
            await self._grpc.stop(grace_seconds)
        if self.enforcer is not None:
            self.enforcer.state.close()  # held GET /v1/caps answer now instead of holding the stop
        for server, _ in self._uvicorns:
            server.should_exit = True
        for _, task in self._uvicorns:
            try:
                await asyncio.wait_for(task, timeout=grace_seconds + 1)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:
                logger.exception("an HTTP server failed while stopping")
        for sock in self._sockets:
            sock.close()
        if self.forwarder is not None:  # every acknowledged export is queued by now: deliver, within the grace
            await asyncio.to_thread(self.forwarder.stop, grace_seconds)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.shutdown, grace_seconds * 1000 + 10_000)
        if self.enforcer is not None:
            await asyncio.to_thread(self.enforcer.stop)
        if self._rates is not None:
            await asyncio.to_thread(self._rates.stop)
        if self.alerter is not None:
            await asyncio.to_thread(self.alerter.stop, grace_seconds)
        if self._webhooks is not None:
            await asyncio.to_thread(self._webhooks.stop)
        if self.cost_metrics is not None:  # a last export: what the final exports and caps added
            await asyncio.to_thread(self.cost_metrics.shutdown, max(grace_seconds, 1.0))
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown)
        if self._spool is not None:
            self._spool.close()
        if self.store is not None and self._given_store is None:
            self.store.close()


def caps_snapshot(enforcer: Enforcer) -> tuple[int, list[dict[str, Any]]]:
    document = enforcer.state.document()
    return int(document["version"]), list(document["caps"])
