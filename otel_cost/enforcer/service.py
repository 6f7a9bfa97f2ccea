"""The enforcer as its own process (`otel-cost enforce`): store, enforcer, webhooks, alerts and a small
API (`GET /v1/caps`, `GET /v1/alerts`, `/healthz`, `/metrics`) on `api.endpoint`, without a receiver."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config import Config
from ..metrics import Metrics
from ..receiver.auth import BearerTokens
from ..store import Store, open_store
from .loop import Enforcer
from .webhooks import WebhookSender

if TYPE_CHECKING:
    from ..alerts.engine import Alerter
    from ..server import EmbeddedUvicorn

__all__ = ["EnforcerService"]


class EnforcerService:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store: Store | None = None
        self.enforcer: Enforcer | None = None
        self.alerter: Alerter | None = None
        self.metrics = Metrics()
        self.api_port = 0
        self._webhooks: WebhookSender | None = None
        self._uvicorn: EmbeddedUvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from ..alerts.engine import Alerter
        from ..api.alerts import alerts_endpoint
        from ..api.caps import caps_endpoint
        from ..server import EmbeddedUvicorn, caps_snapshot, listen

        config = self.config
        sock = listen(config.api.endpoint, "the caps API", "api.endpoint")
        self.api_port = sock.getsockname()[1]
        self.store = await asyncio.to_thread(open_store, config.store.url)
        enforcer = self.enforcer = Enforcer(self.store, config, metrics=self.metrics)
        self.metrics.track_caps(lambda: caps_snapshot(enforcer))
        if config.gateways:
            self._webhooks = WebhookSender(config.gateways)
            enforcer.state.on_change(self._webhooks.notify)
        if config.alerts.enabled:
            self.alerter = Alerter(self.store, config, metrics=self.metrics)
            self.alerter.attach(enforcer)
            await asyncio.to_thread(self.alerter.start)
        await asyncio.to_thread(enforcer.poll_once)
        enforcer.start()

        async def healthz(request: Request) -> Response:
            return JSONResponse(
                {"status": "ok", "evaluations": enforcer.evaluations, "last_error": enforcer.last_error or None}
            )

        async def metrics(request: Request) -> Response:
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

        read_tokens = BearerTokens(config.api.read_tokens)
        app = Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/metrics", metrics),
                Route("/v1/caps", caps_endpoint(enforcer.state, read_tokens)),
                Route("/v1/alerts", alerts_endpoint(self.store, read_tokens)),
            ]
        )
        import uvicorn

        server = EmbeddedUvicorn(uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning"))
        self._uvicorn = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
        if self.enforcer is not None:
            await asyncio.to_thread(self.enforcer.stop)
        if self.alerter is not None:
            await asyncio.to_thread(self.alerter.stop)
        if self._webhooks is not None:
            await asyncio.to_thread(self._webhooks.stop)
        if self.store is not None:
            self.store.close()
