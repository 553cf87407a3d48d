"""SAD: lookup by SPI, make-before-break rekey with a grace period, expiry, on fake time."""

from __future__ import annotations

import pytest

from vpnfleet.agent.esp.sa import (
    Direction,
    Drop,
    InboundSa,
    Lifetime,
    OutboundSa,
    RekeyRequested,
    SaExpired,
    SaParams,
)
from vpnfleet.agent.esp.sad import InboundRemoved, Sad
from vpnfleet.agent.esp.transforms import Encryption

INNER = bytes.fromhex("4500001c000000004011000001020304050607080000000000080000")


def params(spi: int, key_byte: int, lifetime: Lifetime | None = None) -> SaParams:
    return SaParams(
        spi, Encryption.AES128GCM16, bytes([key_byte]) * 20, lifetime=lifetime or Lifetime()
    )


class Peer:
    """The far end: its outbound SA is our inbound one and the other way round."""

    def __init__(self, ours_in: SaParams, ours_out: SaParams) -> None:
        self.send = OutboundSa(ours_in, 0.0)
        self.receive = InboundSa(ours_out, 0.0)

    def packet(self) -> bytes:
        packet = self.send.encap(INNER, 4, now=0.0)
        assert packet is not None
        return packet


def test_unknown_spi_and_short_packets_are_counted() -> None:
    sad = Sad()
    assert sad.decap(bytes.fromhex("0000beef00000001") + bytes(40), 0.0) is Drop.UNKNOWN_SPI
    assert sad.decap(b"\x00\x00", 0.0) is Drop.TRUNCATED
    assert sad.counters.unknown_spi == 1
    assert sad.counters.truncated == 1


def test_decap_dispatches_by_spi() -> None:
    sad = Sad()
    a_in, b_in = params(0x1111, 1), params(0x2222, 2)
    sad.add_inbound(InboundSa(a_in, 0.0))
    sad.add_inbound(InboundSa(b_in, 0.0))
    for p in (a_in, b_in):
        packet = OutboundSa(p, 0.0).encap(INNER, 4, now=0.0)
        assert packet is not None
        assert sad.decap(packet, 0.0) == (INNER, 4)
    assert sad.inbound(0x1111).counters.packets_in == 1  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="inbound SPI 0x00001111 is already installed"):
        sad.add_inbound(InboundSa(a_in, 0.0))


def test_make_before_break_rekey() -> None:
    sad = Sad(grace=5.0)
    old_in, old_out = params(0x1000, 1), params(0x2000, 2)
    sad.add_inbound(InboundSa(old_in, 0.0))
    sad.set_outbound("site", OutboundSa(old_out, 0.0))
    old_peer = Peer(old_in, old_out)
    in_flight = [old_peer.packet() for _ in range(3)]

    new_in, new_out = params(0x1001, 3), params(0x2001, 4)
    replaced = sad.rekey(
        "site", InboundSa(new_in, 100.0), OutboundSa(new_out, 100.0), 0x1000, 100.0
    )
    assert replaced is not None and replaced.spi == 0x2000

    # Outbound switched at once: the next packet uses the new SPI.
    packet = sad.encap("site", INNER, 4, now=100.0)
    assert packet is not None and packet[:4] == (0x2001).to_bytes(4, "big")
    assert Peer(new_in, new_out).receive.decap(packet, 100.0) == (INNER, 4)

    # Both inbound SAs accept during the grace period: nothing in flight is lost.
    new_peer = Peer(new_in, new_out)
    assert sad.decap(new_peer.packet(), 101.0) == (INNER, 4)
    for old_packet in in_flight:
        assert sad.decap(old_packet, 104.9) == (INNER, 4)
    assert sad.get_timer() == 105.0

    # After the grace period the old SPI is gone.
    late = old_peer.packet()
    assert sad.decap(late, 105.0) is Drop.UNKNOWN_SPI
    assert sad.inbound(0x1000) is None
    assert sad.next_event() == InboundRemoved(0x1000, "rekeyed")
    assert sad.decap(new_peer.packet(), 106.0) == (INNER, 4)


def test_grace_removal_by_timer() -> None:
    sad = Sad(grace=2.0)
    sad.add_inbound(InboundSa(params(0x1000, 1), 0.0))
    sad.retire_inbound(0x1000, now=10.0)
    assert sad.retiring(0x1000) == 12.0
    sad.handle_timer(11.9)
    assert sad.inbound(0x1000) is not None
    sad.handle_timer(12.0)
    assert sad.inbound(0x1000) is None
    assert sad.next_event() == InboundRemoved(0x1000, "rekeyed")
    assert sad.get_timer() is None


def test_rekey_refuses_an_unknown_old_spi() -> None:
    sad = Sad()
    with pytest.raises(ValueError, match="old inbound SPI 0x00000999 is not installed"):
        sad.rekey(
            "site",
            InboundSa(params(0x1001, 1), 0.0),
            OutboundSa(params(0x2001, 2), 0.0),
            0x999,
            0.0,
        )
    assert sad.inbound(0x1001) is None
    with pytest.raises(ValueError, match="rekey grace must be >= 0"):
        Sad(grace=-1)


def test_lifetime_events_reach_the_sad_and_expired_sas_leave() -> None:
    sad = Sad()
    life = Lifetime(soft_seconds=50, hard_seconds=60)
    sad.add_inbound(InboundSa(params(0x1000, 1, life), 0.0))
    sad.set_outbound("site", OutboundSa(params(0x2000, 2, life), 0.0))
    assert sad.get_timer() == 50
    sad.handle_timer(50.0)
    events = {sad.next_event(), sad.next_event()}
    assert events == {
        RekeyRequested(0x1000, Direction.INBOUND, "time"),
        RekeyRequested(0x2000, Direction.OUTBOUND, "time"),
    }
    sad.handle_timer(60.0)
    assert sad.inbound(0x1000) is None and sad.outbound("site") is None
    remaining = []
    while (event := sad.next_event()) is not None:
        remaining.append(event)
    assert SaExpired(0x1000, Direction.INBOUND, "time") in remaining
    assert SaExpired(0x2000, Direction.OUTBOUND, "time") in remaining
    assert InboundRemoved(0x1000, "expired") in remaining
    assert sad.encap("site", INNER, 4, now=61.0) is None


def test_packet_path_events_land_in_the_sad_queue() -> None:
    sad = Sad()
    sad.set_outbound("site", OutboundSa(params(0x2000, 2, Lifetime(soft_packets=2)), 0.0))
    sad.encap("site", INNER, 4, now=0.0)
    assert sad.next_event() is None
    sad.encap("site", INNER, 4, now=0.0)
    assert sad.next_event() == RekeyRequested(0x2000, Direction.OUTBOUND, "packets")
