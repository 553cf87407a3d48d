"""Prometheus metrics of one agent, read from the plan sink and the engine at scrape time.

Nothing here sits on the packet path: :class:`AgentCollector` reads the SA reports
(``PlanSink.ike_sas()``) and the data plane's counters when Prometheus scrapes, the way
node_exporter reads /proc. Rekeys are the one thing the reports do not count, so
:class:`RekeyTally` counts the engine's ``ike_rekeyed`` / ``child_rekeyed`` events.

The HTTP endpoint is in :mod:`.metrics_http`, apart because aiohttp takes about 0.2 s to
import and an agent without ``metrics_listen`` never needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from vpnfleet.protos.versions import installed_version

from .cert_expiry import CertificateExpiry
from .engine.engine import Engine
from .io.dataplane_model import DataPlaneStats
from .plan import AgentPlan, IkeVersion
from .sink import DropLayer, EventHub, IkeSaReport, NatState, PlanSink, ProblemKind

NAMESPACE = "vpnfleet"
log = logging.getLogger(__name__)

AH_PROPOSAL_MARK = "AH:"
"""How an AH child's proposal begins in status (``ike.proposals``' notation)."""
REKEY_EVENTS = {"ike_rekeyed": "ike", "child_rekeyed": "child"}


_VERSION_NUMBER = {IkeVersion.V1: 1.0, IkeVersion.V2: 2.0}


class MetricsError(Exception):
    """The metrics endpoint cannot start (bad address, port in use …)."""


class RekeyTally:
    """Counts completed rekeys per peer and SA kind from the engine's events.

    ``start()`` subscribes to the hub and drains it continuously, so the hub's
    drop-oldest policy never loses a rekey here."""

    def __init__(self, events: EventHub) -> None:
        self.events = events
        self.counts: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None

    def count(self, kind: str, peer: str) -> None:
        sa = REKEY_EVENTS.get(kind)
        if sa is not None:
            self.counts[(peer, sa)] = self.counts.get((peer, sa), 0) + 1

    def start(self) -> None:
        queue = self.events.subscribe()

        async def drain() -> None:
            try:
                while True:
                    event = await queue.get()
                    self.count(event.kind, event.peer)
            finally:
                self.events.unsubscribe(queue)

        self._task = asyncio.create_task(drain())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


@dataclass(slots=True)
class MetricsSources:
    """What the collector reads; every callable is called at scrape time."""

    host: str
    version: str
    sink: PlanSink
    plan: Callable[[], AgentPlan | None]
    """The plan in force (for its generation and peer count), None before the first."""
    data_plane_stats: Callable[[], DataPlaneStats | None] | None = None
    raw_ah_counters: Callable[[], Mapping[str, int] | None] | None = None
    """The raw AH socket's counters (``rawah.RawAhCounters``, and ``kernel_drops``), None
    while there is no such socket."""
    ike_counters: Callable[[], Mapping[str, int]] | None = None
    """The engine's whole-agent IKE counters by outcome (malformed, no_peer, cookies_sent …)."""
    rekeys: RekeyTally | None = None
    clock: Callable[[], float] = time.time
    certificates: Callable[[], Sequence[CertificateExpiry]] | None = None
    """The agent's own certificates in use (TLS, IKE) and their notAfter."""


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(f"{NAMESPACE}_{name}", doc, labels=list(labels))


class AgentCollector(Collector):
    """One agent's metrics; register it in a :class:`CollectorRegistry` of its own."""

    def __init__(self, sources: MetricsSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        src = self.sources
        info = InfoMetricFamily(
            f"{NAMESPACE}_agent_build", "The agent's build.", labels=["host", "version"]
        )
        info.add_metric([src.host, src.version], {})
        yield info
        plan = src.plan()
        data_plane = _gauge("agent_data_plane", "1 when the IKE/ESP engine runs, 0 plan-only.")
        data_plane.add_metric([], 1.0 if src.sink.data_plane else 0.0)
        yield data_plane
        generation = _gauge(
            "agent_plan_generation", "Generation of the plan in force (0: no plan yet)."
        )
        generation.add_metric([], float(plan.generation if plan else 0))
        yield generation
        reports = list(src.sink.ike_sas())
        peers = _gauge("agent_peers", "Peers in the plan in force.")
        peers.add_metric([], float(len(plan.peers) if plan else 0))
        yield peers
        peers_up = _gauge("agent_peers_up", "Peers with an IKE SA and a child SA up.")
        peers_up.add_metric([], float(src.sink.peers_up()))
        yield peers_up
        yield from self._ike_sas(reports)
        yield from self._child_sas(reports)
        yield from self._rekeys()
        yield from self._admission()
        yield from self._data_plane()
        yield from self._problems()
        yield from self._drops()
        yield from self._certificates()

    def _certificates(self) -> Iterator[Metric]:
        if self.sources.certificates is None:
            return
        expiry = _gauge(
            "agent_certificate_expiry_seconds",
            "notAfter of the agent's own certificate, unix seconds, by kind (tls, ike).",
            ("kind",),
        )
        for cert in self.sources.certificates():
            expiry.add_metric([cert.kind.value], cert.not_after)
        yield expiry

    def _problems(self) -> Iterator[Metric]:
        problems = _gauge(
            "agent_problems", "Problems the agent reports now, by kind (see its status).", ("kind",)
        )
        found = Counter(p.kind for p in self.sources.sink.problems())
        for kind in ProblemKind:
            problems.add_metric([kind.value], float(found[kind]))
        yield problems

    def _drops(self) -> Iterator[Metric]:
        """Every drop the sink counts, once, in the family of its layer."""
        esp = _counter(
            "dataplane_inbound_drops", "ESP packets the SAD dropped, by reason.", ("reason",)
        )
        sockets = _counter(
            "socket_drops",
            "Datagrams the sockets dropped before IKE or ESP saw them.",
            ("socket", "reason"),
        )
        ike = _counter(
            "ike_sa_rejected_messages",
            "IKE messages an established IKE SA dropped (forged, replayed, unexpected).",
        )
        for drop in self.sources.sink.drops():
            if drop.layer is DropLayer.ESP:
                esp.add_metric([drop.reason.value], float(drop.count))
            elif drop.layer is DropLayer.IKE_SA:
                ike.add_metric([], float(drop.count))
            else:
                sockets.add_metric([drop.layer.value, drop.reason.value], float(drop.count))
        yield from (esp, sockets, ike)

    def _ike_sas(self, reports: list[IkeSaReport]) -> Iterator[Metric]:
        now = self.sources.clock()
        state = _gauge("ike_sa_state", "1 for the IKE SA state each peer is in.", ("peer", "state"))
        nat_detected = _gauge(
            "ike_sa_nat_detected",
            "1 when NAT detection found a NAT (not when UDP 4500 was only forced).",
            ("peer",),
        )
        nat = _gauge(
            "ike_sa_nat",
            "1 for what NAT detection found: detected, forced (force_encap) or none.",
            ("peer", "nat"),
        )
        age = _gauge("ike_sa_age_seconds", "Seconds since the IKE SA was established.", ("peer",))
        liveness = _gauge(
            "ike_sa_last_liveness_seconds",
            "Seconds since the peer was last heard from (liveness).",
            ("peer",),
        )
        version = _gauge(
            "ike_sa_version", "The IKE version of the peer's IKE SA: 1 (RFC 2409) or 2.", ("peer",)
        )
        unauthenticated = _counter(
            "ike_unauthenticated_failures",
            "IKE SAs started by the other side that failed before it authenticated.",
            ("peer",),
        )
        for sa in reports:
            state.add_metric([sa.peer, sa.state], 1.0)
            version.add_metric([sa.peer], _VERSION_NUMBER[sa.ike_version])
            nat_detected.add_metric([sa.peer], 1.0 if sa.nat is NatState.DETECTED else 0.0)
            if sa.nat is not NatState.UNSPECIFIED:
                nat.add_metric([sa.peer, sa.nat.value], 1.0)
            unauthenticated.add_metric([sa.peer], float(sa.unauthenticated_failures))
            if sa.established_at > 0:
                age.add_metric([sa.peer], max(0.0, now - sa.established_at))
            if sa.last_liveness_at > 0:
                liveness.add_metric([sa.peer], max(0.0, now - sa.last_liveness_at))
        yield from (state, version, nat_detected, nat, age, liveness, unauthenticated)

    def _child_sas(self, reports: list[IkeSaReport]) -> Iterator[Metric]:
        labels = ("peer", "child")
        octets = _counter(
            "child_sa_bytes", "Payload octets through the child SA.", (*labels, "direction")
        )
        packets = _counter(
            "child_sa_packets", "Packets through the child SA.", (*labels, "direction")
        )
        replay = _counter(
            "child_sa_replay_drops", "Inbound packets dropped as replays (RFC 4303 3.4.3).", labels
        )
        integrity = _counter(
            "child_sa_integrity_failures", "Inbound packets failing the ICV check.", labels
        )
        policy = _counter(
            "child_sa_policy_drops",
            "Inbound packets outside the child SA's traffic selectors.",
            labels,
        )
        installed = _gauge(
            "child_sa_installed", "1 when both directions are installed in the SAD.", labels
        )
        info = _gauge(
            "child_sa_info",
            "1 per child SA, labelled with its IPsec protocol (esp or ah: IP protocol 50 or "
            "51), negotiated proposal and mode.",
            (*labels, "protocol", "proposal", "mode"),
        )
        for sa in reports:
            for c in sa.children:
                key = [sa.peer, c.name]
                octets.add_metric([*key, "in"], float(c.bytes_in))
                octets.add_metric([*key, "out"], float(c.bytes_out))
                packets.add_metric([*key, "in"], float(c.packets_in))
                packets.add_metric([*key, "out"], float(c.packets_out))
                replay.add_metric(key, float(c.replay_drops))
                integrity.add_metric(key, float(c.integrity_failures))
                policy.add_metric(key, float(c.policy_drops))
                installed.add_metric(key, 1.0 if c.state == "installed" else 0.0)
                # The IKE cores mark an AH proposal "AH:" (strongSwan's notation).
                protocol = "ah" if c.proposal.startswith(AH_PROPOSAL_MARK) else "esp"
                info.add_metric([*key, protocol, c.proposal, str(c.mode)], 1.0)
        yield from (octets, packets, replay, integrity, policy, installed, info)

    def _rekeys(self) -> Iterator[Metric]:
        rekeys = _counter("rekeys", "Completed rekeys since the agent started.", ("peer", "sa"))
        tally = self.sources.rekeys
        if tally is not None:
            for (peer, sa), n in sorted(tally.counts.items()):
                rekeys.add_metric([peer, sa], float(n))
        yield rekeys

    def _admission(self) -> Iterator[Metric]:
        report = self.sources.sink.admission()
        if report is None:
            return
        half_open = _gauge(
            "ike_half_open", "IKE SAs that answered IKE_SA_INIT and are not through IKE_AUTH."
        )
        half_open.add_metric([], float(report.half_open))
        held = _gauge("ike_preauth_fragment_bytes", "Fragment bytes held for half-open IKE SAs.")
        held.add_metric([], float(report.preauth_fragment_bytes))
        value = _gauge(
            "ike_admission_limit", "Caps on half-open IKE SAs and pre-auth bytes.", ("limit",)
        )
        refused = _counter(
            "ike_admission_refused",
            "IKE requests, messages or fragments dropped over a cap.",
            ("limit",),
        )
        for limit in report.limits:
            value.add_metric([limit.name], float(limit.value))
            refused.add_metric([limit.name], float(limit.refused))
        yield from (half_open, held, value, refused)

    def _data_plane(self) -> Iterator[Metric]:
        src = self.sources
        if src.ike_counters is not None:
            ike = _counter(
                "ike_messages", "IKE messages by what became of them (whole agent).", ("outcome",)
            )
            for name, n in sorted(src.ike_counters().items()):
                ike.add_metric([name], float(n))
            yield ike
        stats = src.data_plane_stats() if src.data_plane_stats is not None else None
        if stats is None:
            return
        packets = _counter("dataplane_packets", "Data-plane packet counts by event.", ("event",))
        for name, n in sorted(stats.counters.items()):
            packets.add_metric([name], float(n))
        yield packets
        sas = _gauge("dataplane_sas", "SAs installed in the SAD.", ("direction",))
        for direction in ("in", "out"):
            sas.add_metric([direction], float(sum(s.direction == direction for s in stats.sas)))
        yield sas
        raw_ah = src.raw_ah_counters() if src.raw_ah_counters is not None else None
        if raw_ah is not None:
            # Not among the drop layers of status (its proto has none for AH's socket).
            ah = _counter(
                "raw_ah_socket_packets",
                "The raw AH (IP protocol 51) socket's packets by event: received, too short, "
                "malformed, sent, dropped at send, refused (identification 0), send errors, "
                "dropped by the kernel (receive buffer full).",
                ("event",),
            )
            for name, n in sorted(raw_ah.items()):
                ah.add_metric([name], float(n))
            yield ah


def agent_registry(sources: MetricsSources) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(sources))
    return registry


def agent_sources(
    host: str,
    sink: PlanSink,
    plan: Callable[[], AgentPlan | None],
    certificates: Callable[[], Sequence[CertificateExpiry]] | None = None,
) -> MetricsSources:
    """Sources for an agent process: the engine's data-plane and IKE counters when the
    sink is the engine, the SA reports alone otherwise (plan-only)."""
    sources = MetricsSources(host, installed_version(), sink, plan, certificates=certificates)
    if isinstance(sink, Engine):
        engine = sink

        def stats() -> DataPlaneStats | None:
            return engine.dp.stats() if engine.dp is not None else None

        def raw_ah() -> Mapping[str, int] | None:
            sock = engine.raw_ah
            if sock is None:
                return None
            counts = sock.counters.as_dict()
            overflowed = sock.kernel_drops()
            if overflowed is not None:
                counts["kernel_drops"] = overflowed
            return counts

        sources.data_plane_stats = stats
        sources.raw_ah_counters = raw_ah
        sources.ike_counters = engine.ike_counters
    return sources
