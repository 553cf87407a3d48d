"""The agent's Prometheus endpoint: aiohttp serving prometheus_client's exposition of
:class:`~.metrics.AgentCollector`.

It runs on the agent's own event loop, so a scrape reads the engine's state between two
packets, never while a callback is half way through changing it (a server thread would
race the loop). The agent's CLI imports this module only when metrics are served:
aiohttp takes about 0.2 s to import, on every agent start otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from prometheus_client.aiohttp import make_aiohttp_handler

from .cert_expiry import CertificateExpiry
from .metrics import (
    MetricsError,
    MetricsSources,
    RekeyTally,
    agent_registry,
    agent_sources,
)
from .plan import AgentPlan
from .sink import EventHub, PlanSink

REQUEST_TIMEOUT = 10.0
"""Seconds a client may take to send its request."""


class _NoClientFaults(logging.Filter):
    """Drops aiohttp's report of a request its parser refused (answered 400): that is the
    client's fault, and a client must not be able to fill the agent's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        fault = record.exc_info[1] if record.exc_info else None
        return not isinstance(fault, BadHttpMessage)


http_log = logging.getLogger("vpnfleet.agent.metrics.http")
"""What aiohttp reports about the endpoint: a failed collection, with its traceback."""
http_log.addFilter(_NoClientFaults())


async def _prepare(request: web.Request, response: web.StreamResponse) -> None:
    # A scrape is one request: answering with Connection: close bounds what an idle
    # client holds open on the agent. No Python or library versions in Server.
    response.force_close()
    response.headers["Connection"] = "close"
    response.headers["Server"] = "vpnfleet"


@dataclass(slots=True)
class MetricsEndpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise MetricsError(f"metrics listen {listen!r} must be host:port, e.g. 127.0.0.1:9477")
    return host, int(port)


@contextlib.asynccontextmanager
async def serve_metrics(
    listen: str, sources: MetricsSources, events: EventHub | None = None
) -> AsyncIterator[MetricsEndpoint]:
    """Serve ``sources`` at ``http://listen/metrics`` (port 0: any free port) while the
    context is open; with ``events``, rekeys are counted from them."""
    host, port = split_listen(listen)
    if events is not None and sources.rekeys is None:
        sources.rekeys = RekeyTally(events)
    app = web.Application()
    # prometheus_client's own exposition: the text format, or OpenMetrics when the
    # scraper asks for it. Uncompressed, as the endpoint has always answered.
    scrape = make_aiohttp_handler(agent_registry(sources), disable_compression=True)
    app.router.add_get("/metrics", scrape)  # GET and HEAD
    app.router.add_get("/", scrape)
    app.on_response_prepare.append(_prepare)
    # aiohttp starts the keep-alive timeout with the connection (so in pyproject.toml's
    # aiohttp release; test_agent_metrics checks it): a client that has not sent its
    # whole request by then is disconnected.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=REQUEST_TIMEOUT,
        logger=http_log,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise MetricsError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
    if sources.rekeys is not None:
        sources.rekeys.start()
    bound = runner.addresses[0]
    try:
        yield MetricsEndpoint(host, int(bound[1]))
    finally:
        if sources.rekeys is not None:
            await sources.rekeys.stop()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def agent_metrics(
    listen: str,
    host: str,
    sink: PlanSink,
    events: EventHub,
    plan: Callable[[], AgentPlan | None],
    certificates: Callable[[], Sequence[CertificateExpiry]] | None = None,
) -> AsyncIterator[MetricsEndpoint | None]:
    """:func:`serve_metrics` for an agent process; yields None when ``listen`` is empty."""
    if not listen:
        yield None
        return
    sources = agent_sources(host, sink, plan, certificates)
    async with serve_metrics(listen, sources, events) as endpoint:
        yield endpoint
