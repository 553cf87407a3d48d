"""Fuzz the AH receive and send paths: nothing raises, every received packet is counted
once, and whatever a mutated packet yields is either a drop or exactly what was sent."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from vpnfleet.agent.esp.ah import AhParams, InboundAhSa, OutboundAhSa
from vpnfleet.agent.esp.ah_icv import ipv4_checksum
from vpnfleet.agent.esp.sa import Drop, Mode, SaCounters
from vpnfleet.agent.esp.transforms import Integrity

SPI = 0x00C0FFEE
INTEGRITIES = [Integrity.HMAC_SHA2_256_128, Integrity.HMAC_SHA1_96, Integrity.AES128GMAC]
ADDRESSES = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}


def make_params(integrity: Integrity, esn: bool, mode: Mode, version: int) -> AhParams:
    src, dst = ADDRESSES[version]
    return AhParams(
        SPI, integrity, b"\x42" * integrity.key_length, mode=mode, esn=esn, src=src, dst=dst
    )


def outcomes(counters: SaCounters) -> int:
    """Packets received so far: delivered plus every kind of drop."""
    fields = dataclasses.asdict(counters)
    return sum(v for k, v in fields.items() if not k.startswith(("bytes_", "packets_out")))


def ipv4(payload: bytes, protocol: int = 17, options: bytes = b"") -> bytes:
    total = 20 + len(options) + len(payload)
    header = bytearray(
        bytes((0x45 + len(options) // 4, 0))
        + total.to_bytes(2, "big")
        + bytes(4)
        + bytes((64, protocol, 0, 0))
        + bytes((10, 0, 0, 1, 10, 0, 0, 2))
        + options
    )
    header[10:12] = ipv4_checksum(header).to_bytes(2, "big")
    return bytes(header) + payload


def ipv6(payload: bytes, next_header: int = 17) -> bytes:
    return (
        b"\x60\x00\x00\x00"
        + len(payload).to_bytes(2, "big")
        + bytes((next_header, 64))
        + bytes(15)
        + b"\x01"
        + bytes(15)
        + b"\x02"
        + payload
    )


integrities = st.sampled_from(INTEGRITIES)
modes = st.sampled_from(list(Mode))
versions = st.sampled_from([4, 6])


@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(max_size=200),
    integrity=integrities,
    esn=st.booleans(),
    mode=modes,
    version=versions,
    wrap=st.sampled_from([None, 4, 6]),
)
def test_random_bytes_never_raise_and_are_counted(
    data: bytes, integrity: Integrity, esn: bool, mode: Mode, version: int, wrap: int | None
) -> None:
    # Raw garbage, and garbage behind a valid IP header that says AH follows.
    if wrap == 4:
        data = ipv4(data, 51)
    elif wrap == 6:
        data = ipv6(data, 51)
    sa = InboundAhSa(make_params(integrity, esn, mode, version), 0.0)
    before = outcomes(sa.counters)
    assert isinstance(sa.decap(data, 0.0), Drop)
    assert outcomes(sa.counters) == before + 1


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), integrity=integrities, mode=modes, version=versions)
def test_random_bytes_to_protect_never_raise(
    data: bytes, integrity: Integrity, mode: Mode, version: int
) -> None:
    out = OutboundAhSa(make_params(integrity, False, mode, version), 0.0)
    result = out.encap(data, 0.0)
    if isinstance(result, Drop):
        assert out.seq == 0 and out.counters.malformed == 1
    else:
        assert out.seq == 1 and out.counters.packets_out == 1
        back = InboundAhSa(make_params(integrity, False, mode, version), 0.0).decap(result, 0.0)
        if mode is Mode.TUNNEL:
            assert back == data
        else:  # a source route in the packet is predicted for its arrival, not as sent
            assert isinstance(back, bytes) or back is Drop.INTEGRITY


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("extend"), st.integers(1, 64), st.integers(0, 255)),
    st.tuples(st.just("splice"), st.integers(0, 10_000), st.integers(0, 255)),
)


def mutate(packet: bytes, kind: str, where: int, value: int) -> bytes:
    if not packet:
        return bytes([value]) * where if kind == "extend" else bytes([value])
    if kind == "flip":
        at = where % len(packet)
        return packet[:at] + bytes([packet[at] ^ value]) + packet[at + 1 :]
    if kind == "truncate":
        return packet[: where % len(packet)]
    if kind == "extend":
        return packet + bytes([value]) * where
    at = where % len(packet)
    return packet[:at] + bytes([value]) + packet[at:]


@settings(max_examples=400, deadline=None)
@given(
    integrity=integrities,
    esn=st.booleans(),
    version=versions,
    inner_version=versions,
    payload=st.binary(min_size=8, max_size=60),
    mutations=st.lists(mutation, min_size=1, max_size=3),
)
def test_mutated_tunnel_packets_yield_a_drop_or_the_very_inner_packet(
    integrity: Integrity,
    esn: bool,
    version: int,
    inner_version: int,
    payload: bytes,
    mutations: list[tuple[str, int, int]],
) -> None:
    # In tunnel mode the inner packet is wholly covered by the ICV: a mutant may pass
    # only if it changed mutable outer fields (or link padding), and then it must give
    # back the inner packet unchanged.
    params = make_params(integrity, esn, Mode.TUNNEL, version)
    inner = ipv4(payload) if inner_version == 4 else ipv6(payload)
    packet = OutboundAhSa(params, 0.0).encap(inner, 0.0)
    assert isinstance(packet, bytes)
    mutated = packet
    for kind, where, value in mutations:
        mutated = mutate(mutated, kind, where, value)
    sa = InboundAhSa(params, 0.0)
    before = outcomes(sa.counters)
    result = sa.decap(mutated, 0.0)
    assert outcomes(sa.counters) == before + 1
    assert isinstance(result, Drop) or result == inner
    if mutated == packet:
        assert result == inner
    # The genuine packet is accepted unless the mutant already was (same number).
    again = sa.decap(packet, 0.0)
    assert again == (Drop.REPLAYED if result == inner else inner)


@settings(max_examples=400, deadline=None)
@given(
    integrity=integrities,
    version=versions,
    options=st.binary(max_size=40),
    payload=st.binary(min_size=8, max_size=60),
)
def test_transport_round_trip_with_random_options(
    integrity: Integrity, version: int, options: bytes, payload: bytes
) -> None:
    # IPv4 options or an IPv6 hop-by-hop header with arbitrary content: either refused
    # as unreadable, or protected and given back exactly, for every option kind.
    if version == 4:
        options = options[: len(options) // 4 * 4]
        packet = ipv4(payload, 17, options)
    else:
        body = options[: (len(options) + 2) // 8 * 8 - 2] if len(options) >= 6 else b""
        packet = ipv6(bytes((17, len(body) // 8)) + body + payload if body else payload, 0)
        if not body:
            packet = ipv6(payload)
    params = make_params(integrity, False, Mode.TRANSPORT, version)
    out = OutboundAhSa(params, 0.0)
    protected = out.encap(packet, 0.0)
    if isinstance(protected, Drop):
        assert protected is Drop.BAD_INNER_PACKET and out.counters.malformed == 1
        return
    routed = version == 4 and any(kind in options for kind in (0x83, 0x89))
    result = InboundAhSa(params, 0.0).decap(protected, 0.0)
    assert result == packet or (routed and result is Drop.INTEGRITY)
