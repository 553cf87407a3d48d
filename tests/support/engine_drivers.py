"""The engine's drivers on their own: an SA driver's host as a recorder on fake time, a
fake peer driver that notes what its SAs tell it, an in-memory data plane, a peer
driver's host, and a wire that carries IKE between the left and right hosts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.support.ike_peers import LEFT, RIGHT, left_right
from vpnfleet.agent.engine.clock import ManualScheduler, Scheduler
from vpnfleet.agent.engine.keylog import KeyLog
from vpnfleet.agent.engine.plane import ChildSaPlane
from vpnfleet.agent.engine.sa_driver import SaDriver, SaOwner
from vpnfleet.agent.esp.sa import SaParams
from vpnfleet.agent.esp.spd import TrafficSelector
from vpnfleet.agent.ike.admission import HalfOpenTable, LogLimiter
from vpnfleet.agent.ike.config import IkeConfig
from vpnfleet.agent.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    ChildSaRekeyed,
    IkeEvent,
    IkeSaEstablished,
    IkeSaRekeyed,
    IkeSaRekeyFailed,
    PeerErrorNotify,
)
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.states import Role
from vpnfleet.agent.io.dataplane_model import DataPlaneStats, Encap
from vpnfleet.agent.io.udp import IKE_PORT, Address


@dataclass
class FakeOwner:
    """A peer driver that only writes down what its SAs told it."""

    name: str
    calls: list[tuple[str, object]] = field(default_factory=list)
    fail_on: str = ""
    """Raise on this call (to see the driver go on)."""

    def _note(self, what: str, arg: object) -> None:
        self.calls.append((what, arg))
        if what == self.fail_on:
            raise RuntimeError(f"{what} failed (on purpose)")

    def on_ike_up(self, driver: SaDriver, event: IkeSaEstablished) -> None:
        self._note("ike_up", driver)

    def on_ike_rekeyed(self, old: SaDriver, new: SaDriver, event: IkeSaRekeyed) -> None:
        self._note("ike_rekeyed", (old, new))

    def on_ike_gone(self, driver: SaDriver, reason: str, *, failed: bool) -> None:
        self._note("ike_failed" if failed else "ike_deleted", reason)

    def on_ike_rekey_failed(self, driver: SaDriver, event: IkeSaRekeyFailed) -> None:
        self._note("ike_rekey_failed", event)

    def on_child_up(self, driver: SaDriver, event: ChildSaEstablished) -> None:
        self._note("child_up", event)

    def on_child_rekeyed(self, driver: SaDriver, event: ChildSaRekeyed) -> None:
        self._note("child_rekeyed", event)

    def on_child_deleted(self, event: ChildSaDeleted) -> None:
        self._note("child_deleted", event)

    def on_child_failed(self, event: ChildSaFailed) -> None:
        self._note("child_failed", event)

    def on_peer_error(self, event: PeerErrorNotify) -> None:
        self._note("peer_error", event)

    def on_liveness_answered(self) -> None:
        self._note("liveness_answered", None)

    def on_closed(self, driver: SaDriver) -> None:
        self._note("closed", driver)

    def after_input(self, driver: SaDriver) -> None:
        pass  # deadlines are not this fake's business

    def kinds(self) -> list[str]:
        return [what for what, _ in self.calls]


class RecordingHost:
    """The engine as an SA driver sees it: a clock, a send queue, an SPI registry."""

    def __init__(self, clock: ManualScheduler) -> None:
        self.clock = clock
        self.stopped = False
        self.keylog: KeyLog | None = None
        self.sent: list[tuple[bytes, Address]] = []
        self.by_spi: dict[bytes, SaDriver] = {}
        self.forgotten: list[SaDriver] = []
        self.failures: list[str] = []

    @property
    def scheduler(self) -> Scheduler:
        return self.clock

    def now(self) -> float:
        return self.clock.now()

    def wall(self) -> float:
        return 1_700_000_000.0 + self.clock.now()

    def send_ike(self, driver: SaDriver, data: bytes, addr: Address) -> None:
        self.sent.append((data, addr))

    def adopt(self, sa: IkeSa, owner: SaOwner | None) -> SaDriver:
        driver = SaDriver(sa, owner, self)
        self.by_spi[sa.local_spi] = driver
        return driver

    def forget(self, driver: SaDriver) -> None:
        self.by_spi.pop(driver.sa.local_spi, None)
        self.forgotten.append(driver)

    def event_failed(self, driver: SaDriver, event: IkeEvent) -> None:
        self.failures.append(type(event).__name__)


class Wire:
    """Two hosts; what one sends is delivered to the other by our SPI (I flag)."""

    def __init__(self, left_host: type[RecordingHost] | None = None) -> None:
        """``left_host``: the kind of host on the left (a peer driver's, say)."""
        self.clock = ManualScheduler()
        self.left = (left_host or RecordingHost)(self.clock)
        self.right = RecordingHost(self.clock)
        self.lost: list[bytes] = []
        self.responders: list[SaDriver] = []
        self.responder: tuple[IkeConfig, FakeOwner] | None = None
        """What the right side answers an IKE_SA_INIT request with (the gate's part)."""

    def pump(self, drop_from_right: bool = False) -> None:
        for _ in range(50):
            moved = False
            for sender, receiver, source in (
                (self.left, self.right, LEFT),
                (self.right, self.left, RIGHT),
            ):
                out, sender.sent = sender.sent, []
                for data, _ in out:
                    moved = True
                    if drop_from_right and sender is self.right:
                        self.lost.append(data)
                        continue
                    from_initiator = bool(data[19] & 0x08)
                    ours = data[8:16] if from_initiator else data[0:8]
                    if from_initiator and ours == bytes(8):
                        self._answer(data, source)
                        continue
                    driver = receiver.by_spi.get(ours)
                    if driver is not None:
                        driver.receive(data, source, 500)
            if not moved:
                return

    def _answer(self, data: bytes, source: Address) -> None:
        """A new responder SA, adopted once it has its SPI (as the engine's gate does)."""
        assert self.responder is not None
        config, owner = self.responder
        sa = IkeSa(config, Role.RESPONDER)
        sa.receive_datagram(data, source, self.clock.now(), self.right.wall())
        driver = self.right.adopt(sa, owner)
        driver.last_port = 500
        driver.service()
        self.responders.append(driver)


def pair(
    wire: Wire, drop_from_right: bool = False
) -> tuple[SaDriver, SaDriver, FakeOwner, FakeOwner]:
    """An initiator and the responder its IKE_SA_INIT made, the network pumped."""
    left_config, right_config = left_right()
    left_owner, right_owner = FakeOwner("right"), FakeOwner("left")
    wire.responder = (right_config, right_owner)
    initiator = wire.left.adopt(IkeSa(left_config, Role.INITIATOR), left_owner)
    initiator.sa.initiate(RIGHT, wire.clock.now())
    initiator.service()
    wire.pump(drop_from_right)
    (responder,) = wire.responders
    return initiator, responder, left_owner, right_owner


class MemoryPlane:
    """The data plane's child SA calls, kept in memory (``ChildSaPlane``): per policy
    the inbound SPIs, the outbound SPI in use and the one waiting for activation."""

    def __init__(self) -> None:
        self.inbound: dict[str, list[int]] = {}
        self.outbound: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        self.calls: list[str] = []

    def install_child_sa(
        self,
        policy: str,
        inbound: SaParams,
        outbound: SaParams,
        peer: str | Address,
        *,
        encap: Encap = Encap.UDP,
        local: str | None = None,
        local_ts: Sequence[TrafficSelector] = (),
        remote_ts: Sequence[TrafficSelector] = (),
    ) -> None:
        self.calls.append(f"install {policy}")
        self.inbound[policy] = [inbound.spi]
        self.outbound[policy] = outbound.spi
        self.pending.pop(policy, None)

    def rekey_child_sa(
        self,
        policy: str,
        inbound: SaParams,
        outbound: SaParams,
        *,
        local_ts: Sequence[TrafficSelector] | None = None,
        remote_ts: Sequence[TrafficSelector] | None = None,
        switch_outbound: bool = True,
    ) -> None:
        if policy not in self.outbound:
            raise ValueError(f"policy {policy!r} has no child SA")
        self.calls.append(f"rekey {policy}")
        self.inbound[policy].append(inbound.spi)
        if switch_outbound:
            self.outbound[policy] = outbound.spi
        else:
            self.pending[policy] = outbound.spi

    def activate_outbound(self, policy: str) -> None:
        if policy not in self.pending:
            raise ValueError(f"policy {policy!r} has no outbound SA waiting")
        self.calls.append(f"activate {policy}")
        self.outbound[policy] = self.pending.pop(policy)

    def remove_child_sa(self, policy: str) -> None:
        if policy not in self.outbound:
            raise ValueError(f"policy {policy!r} has no child SA")
        self.calls.append(f"remove {policy}")
        del self.outbound[policy], self.inbound[policy]
        self.pending.pop(policy, None)

    def stats(self) -> DataPlaneStats:
        return DataPlaneStats({}, {})


class PeerHostRecorder(RecordingHost):
    """The engine as a peer driver sees it: the SA host, plus randomness, events, the
    in-memory data plane and NAT keepalives."""

    def __init__(self, clock: ManualScheduler) -> None:
        super().__init__(clock)
        self.rng = random.Random(7)
        self.untrusted_log = LogLimiter()
        self.half_open = HalfOpenTable()
        self.memory_plane = MemoryPlane()
        self.published: list[tuple[str, str, str]] = []
        self.keepalives: set[Address] = set()

    @property
    def plane(self) -> ChildSaPlane | None:
        return self.memory_plane

    @property
    def raw_esp(self) -> bool:
        return False

    def publish(self, kind: str, peer: str, detail: str) -> None:
        self.published.append((kind, peer, detail))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.published]

    def driver_of(self, sa: IkeSa) -> SaDriver:
        found = self.by_spi.get(sa.local_spi)
        return found if found is not None and found.sa is sa else SaDriver(sa, None, self)

    def nat_keepalive(self, addr: Address, on: bool) -> None:
        if on:
            self.keepalives.add(addr)
        else:
            self.keepalives.discard(addr)

    def ike_port(self) -> int:
        return IKE_PORT
