"""Fuzz the ESP receive path and the header parser: nothing raises, every packet is counted."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from vpnfleet.agent.esp.sa import Drop, InboundSa, Mode, OutboundSa, SaCounters, SaParams
from vpnfleet.agent.esp.sad import Sad
from vpnfleet.agent.esp.spd import PacketInfo, parse_ip_packet
from vpnfleet.agent.esp.transforms import Encryption, Integrity

SUITES = [
    (Encryption.AES128GCM16, None),
    (Encryption.CHACHA20POLY1305, None),
    (Encryption.AES128, Integrity.HMAC_SHA2_256_128),
]
SPI = 0x00C0FFEE


def make_params(index: int, esn: bool, mode: Mode) -> SaParams:
    encryption, integrity = SUITES[index]
    return SaParams(
        SPI,
        encryption,
        b"\x42" * encryption.key_length,
        integrity,
        b"\x24" * integrity.key_length if integrity else b"",
        mode=mode,
        esn=esn,
    )


def outcomes(counters: SaCounters) -> int:
    """Packets received so far: delivered plus every kind of drop."""
    fields = dataclasses.asdict(counters)
    return sum(v for k, v in fields.items() if not k.startswith(("bytes_", "packets_out")))


suite_index = st.integers(0, len(SUITES) - 1)
modes = st.sampled_from(list(Mode))


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=200), index=suite_index, esn=st.booleans(), mode=modes)
def test_random_bytes_never_raise_and_are_counted(
    data: bytes, index: int, esn: bool, mode: Mode
) -> None:
    sa = InboundSa(make_params(index, esn, mode), 0.0)
    before = outcomes(sa.counters)
    result = sa.decap(data, 0.0)
    assert isinstance(result, Drop)
    assert outcomes(sa.counters) == before + 1
    sad = Sad()
    sad.add_inbound(InboundSa(make_params(index, esn, mode), 0.0))
    assert isinstance(sad.decap(SPI.to_bytes(4, "big") + data, 0.0), Drop)
    assert isinstance(sad.decap(data, 0.0), Drop)


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
    index=suite_index,
    esn=st.booleans(),
    payload=st.binary(min_size=20, max_size=80),
    mutations=st.lists(mutation, min_size=1, max_size=3),
)
def test_mutated_valid_packets_are_dropped_and_counted(
    index: int, esn: bool, payload: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    params = make_params(index, esn, Mode.TUNNEL)
    inner = b"\x45" + payload[1:]
    packet = OutboundSa(params, 0.0).encap(inner, 4, now=0.0)
    assert packet is not None
    mutated = packet
    for kind, where, value in mutations:
        mutated = mutate(mutated, kind, where, value)
    sa = InboundSa(params, 0.0)
    before = outcomes(sa.counters)
    result = sa.decap(mutated, 0.0)
    assert outcomes(sa.counters) == before + 1
    if mutated == packet:
        assert result == (inner, 4)
    else:
        assert isinstance(result, Drop)
    # The genuine packet is still accepted unless the mutant was the packet itself.
    again = sa.decap(packet, 0.0)
    assert again == (Drop.REPLAYED if mutated == packet else (inner, 4))


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=120))
def test_parser_never_raises_on_random_bytes(data: bytes) -> None:
    info = parse_ip_packet(data)
    assert info is None or isinstance(info, PacketInfo)


@settings(max_examples=1000, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    header=st.binary(min_size=60, max_size=60),
    tail=st.binary(max_size=80),
    cut=st.integers(0, 200),
)
def test_parser_on_plausible_headers(version: int, header: bytes, tail: bytes, cut: int) -> None:
    data = (bytes([(version << 4) | (header[0] & 0x0F)]) + header[1:] + tail)[:cut]
    info = parse_ip_packet(data)
    if info is not None:
        assert info.version == version
        assert 0 <= info.protocol <= 255
        assert -1 <= info.sport <= 65535 and -1 <= info.dport <= 65535
        assert 0 <= info.src < (1 << (32 if version == 4 else 128))
