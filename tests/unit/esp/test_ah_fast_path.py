"""AH's fast path (no IPv4 options, no IPv6 extension headers before AH) against the
general one: the ICV a packet carries is the one ``canonical`` gives for it (RFC 4302
section 3.3.3.1, the mutable base-header fields zeroed, ICV zero while computed), and on
receipt every bit of the base header is either mutable (the packet still verifies) or
covered (it is refused), as the section's lists say."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vpnfleet.agent.esp.ah import AH_HEADER_LENGTH, AhParams, InboundAhSa, OutboundAhSa
from vpnfleet.agent.esp.ah_icv import canonical, ipv4_checksum, received_layout
from vpnfleet.agent.esp.sa import Drop, Mode
from vpnfleet.agent.esp.transforms import Integrity, build_authenticator

SPI = 0x0000FA57
ADDRESSES = {4: ("192.0.2.10", "192.0.2.20"), 6: ("2001:db8:f::10", "2001:db8:f::20")}
INTEGRITIES = [
    Integrity.HMAC_SHA2_256_128,
    Integrity.HMAC_SHA2_384_192,
    Integrity.HMAC_SHA2_512_256,
    Integrity.HMAC_SHA1_96,
    Integrity.AES128GMAC,
    Integrity.AES256GMAC,
]
# Octets of the base header that RFC 4302 sections 3.3.3.1.1.1 and 3.3.3.1.2.1 call
# mutable (zeroed for the ICV): (octet, bit mask).
MUTABLE = {
    4: {1: 0xFF, 6: 0xFF, 7: 0xFF, 8: 0xFF, 10: 0xFF, 11: 0xFF},
    6: {0: 0x0F, 1: 0xFF, 2: 0xFF, 3: 0xFF, 7: 0xFF},
}
# IPv4's MF flag and fragment offset are mutable too, but a packet with them set is a
# fragment, which AH never verifies (section 3.4.1).
FRAGMENT = {4: {6: 0x3F, 7: 0xFF}, 6: {}}


def params(integrity: Integrity, mode: Mode, version: int, esn: bool) -> AhParams:
    src, dst = ADDRESSES[version] if mode is Mode.TUNNEL else ("*", "*")
    key = bytes(range(7, 7 + integrity.key_length))
    return AhParams(SPI, integrity, key, mode=mode, esn=esn, src=src, dst=dst)


@st.composite
def plain_packets(draw: st.DrawFn, version: int) -> bytes:
    """A whole IPv4 packet without options, or IPv6 without extension headers, with
    random mutable and immutable fields."""
    # IPv6's payload length 0 would be a jumbogram (RFC 2675), not carried here.
    payload = draw(st.binary(min_size=0 if version == 4 else 1, max_size=300))
    protocol = draw(st.sampled_from([1, 6, 17, 47, 58, 132]))
    if version == 4:
        header = bytearray(20)
        header[0] = 0x45
        header[1] = draw(st.integers(0, 255))
        header[2:4] = (20 + len(payload)).to_bytes(2, "big")
        header[4:6] = draw(st.binary(min_size=2, max_size=2))
        header[6] = draw(st.sampled_from([0x00, 0x40, 0x80]))  # no fragment
        header[8] = draw(st.integers(1, 255))
        header[9] = protocol
        header[12:20] = draw(st.binary(min_size=8, max_size=8))
        header[10:12] = ipv4_checksum(header).to_bytes(2, "big")
    else:
        header = bytearray(40)
        header[0:4] = (6 << 28 | draw(st.integers(0, (1 << 28) - 1))).to_bytes(4, "big")
        header[4:6] = len(payload).to_bytes(2, "big")
        header[6] = protocol
        header[7] = draw(st.integers(1, 255))
        header[8:40] = draw(st.binary(min_size=32, max_size=32))
    return bytes(header) + payload


def expected_icv(sealed: bytes, integrity: Integrity, seq: int, esn: bool) -> bytes:
    """The ICV through the general path: ``canonical`` over the sealed packet."""
    layout = received_layout(sealed)
    assert layout is not None and layout.next_header == 51
    iv = sealed[layout.at + AH_HEADER_LENGTH : layout.at + AH_HEADER_LENGTH + integrity.iv_length]
    icv_at = layout.at + AH_HEADER_LENGTH + integrity.iv_length
    covered = canonical(sealed, layout, icv_at, integrity.icv_length, sending=False)
    assert covered is not None
    if esn:
        covered += (seq >> 32).to_bytes(4, "big")
    auth = build_authenticator(integrity, bytes(range(7, 7 + integrity.key_length)))
    return auth.sign(iv, bytes(covered))


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    integrity=st.sampled_from(INTEGRITIES),
    mode=st.sampled_from(list(Mode)),
    version=st.sampled_from([4, 6]),
    inner_version=st.sampled_from([4, 6]),
    esn=st.booleans(),
    seq=st.integers(1, (1 << 40)),
)
def test_fast_path_icv_is_the_general_paths(
    data: st.DataObject,
    integrity: Integrity,
    mode: Mode,
    version: int,
    inner_version: int,
    esn: bool,
    seq: int,
) -> None:
    tunnel = mode is Mode.TUNNEL
    packet = data.draw(plain_packets(inner_version if tunnel else version))
    seq = seq if esn else seq & 0xFFFFFFFF or 1
    sa = params(integrity, mode, version, esn)
    sealed = OutboundAhSa(sa, 0.0).seal_with_seq(seq, packet)
    assert isinstance(sealed, bytes)
    layout = received_layout(sealed)
    assert layout is not None
    icv_at = layout.at + AH_HEADER_LENGTH + integrity.iv_length
    assert sealed[icv_at : icv_at + integrity.icv_length] == expected_icv(
        sealed, integrity, seq, esn
    )
    if version == 4:  # the header checksum (RFC 791) is right for the header as sent
        unsummed = sealed[:10] + b"\x00\x00" + sealed[12:20]
        assert ipv4_checksum(unsummed) == int.from_bytes(sealed[10:12], "big")
    inbound = InboundAhSa(sa, 0.0)
    inbound.replay.update(seq - 1)
    assert inbound.decap(sealed, 0.0) == packet


def test_every_base_header_bit_is_mutable_or_covered() -> None:
    for version in (4, 6):
        for integrity in (Integrity.HMAC_SHA2_256_128, Integrity.AES128GMAC):
            sa = params(integrity, Mode.TUNNEL, version, esn=False)
            inner = bytes.fromhex("4500001c000040004011") + bytes(10) + bytes(8)
            sealed = OutboundAhSa(sa, 0.0).seal_with_seq(1, inner)
            assert isinstance(sealed, bytes)
            for octet in range(20 if version == 4 else 40):
                for bit in range(8):
                    forged = bytearray(sealed)
                    forged[octet] ^= 1 << bit
                    result = InboundAhSa(sa, 0.0).decap(bytes(forged), 0.0)
                    mask = 1 << bit
                    if FRAGMENT[version].get(octet, 0) & mask:
                        assert result is Drop.TRUNCATED, (version, integrity, octet, bit)
                    elif MUTABLE[version].get(octet, 0) & mask:
                        assert result == inner, (version, integrity, octet, bit)
                    else:
                        assert isinstance(result, Drop), (version, integrity, octet, bit)
