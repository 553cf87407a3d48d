"""Known answers for AH's integrity transforms, and AES-GMAC AH packets checked with an
independent GMAC (GHASH written out here from NIST SP 800-38D) over the header as scapy
canonicalizes it (scapy has no GMAC of its own).

HMAC-SHA2-256-128/384-192/512-256 are checked against RFC 4868 section 2.7.2 in
test_esp_vectors.py::test_rfc4868_authenticators (the same authenticator AH uses)."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import AH, zero_mutable_fields
from scapy.packet import Packet, Raw

from vpnfleet.agent.esp.ah import AhParams, InboundAhSa, OutboundAhSa, ah_length
from vpnfleet.agent.esp.sa import Drop, Mode
from vpnfleet.agent.esp.transforms import (
    GmacAuthenticator,
    HmacAuthenticator,
    Integrity,
    build_authenticator,
    integrity_icv,
)

H = bytes.fromhex

# --- RFC 2404 (HMAC-SHA-1-96): RFC 2202 section 3's HMAC-SHA-1 cases with a 160-bit key,
# truncated to the first 96 bits (RFC 2404 section 2) -------------------------------------

RFC2202_SHA1_CASES = [
    (b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),  # test case 1
    (b"\xaa" * 20, b"\xdd" * 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),  # test case 3
]


@pytest.mark.parametrize(("key", "data", "digest"), RFC2202_SHA1_CASES)
def test_hmac_sha1_96(key: bytes, data: bytes, digest: str) -> None:
    auth = build_authenticator(Integrity.HMAC_SHA1_96, key)
    assert isinstance(auth, HmacAuthenticator)
    assert (
        auth.sign(b"", data) == H(digest)[:12] == integrity_icv(Integrity.HMAC_SHA1_96, key, data)
    )
    assert auth.verify(b"", data, H(digest)[:12])
    assert not auth.verify(b"", data + b"\x00", H(digest)[:12])


def test_hmac_sha1_96_key_is_160_bits() -> None:
    with pytest.raises(ValueError, match="sha1 integrity key must be 20 octets, got 4"):
        build_authenticator(Integrity.HMAC_SHA1_96, b"Jefe")


# --- AES-GMAC: GCM with an empty plaintext (RFC 4543 section 2) --------------------------
# McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 1, 7 and 13 (zero
# key, zero IV, no plaintext, no AAD), and NIST's gcmEncryptExtIV128.rsp (Keylen 128,
# IVlen 96, PTlen 0, AADlen 128, Count 0). The 12-octet IV is RFC 4543's salt (the last
# 4 octets of the keying material) || the 8-octet IV carried in the packet.

GMAC_CASES = [
    ("gcm-1", Integrity.AES128GMAC, bytes(16), bytes(12), b"", "58e2fccefa7e3061367f1d57a4e7455a"),
    ("gcm-7", Integrity.AES192GMAC, bytes(24), bytes(12), b"", "cd33b28ac773f74ba00ed1f312572435"),
    (
        "gcm-13",
        Integrity.AES256GMAC,
        bytes(32),
        bytes(12),
        b"",
        "530f8afbc74536b9a963b4f1c4cb738b",
    ),
    (
        "nist-aad128",
        Integrity.AES128GMAC,
        H("77be63708971c4e240d1cb79e8d77feb"),
        H("e0e00f19fed7ba0136a797f3"),
        H("7a43ec1d9c0a5a78a0b16533a6213cab"),
        "209fcc8d3675ed938e9c7166709dd946",
    ),
]


_R = 0xE1 << 120


def _gf_mult(x: int, y: int) -> int:
    # NIST SP 800-38D section 6.3, Algorithm 1 (bit 0 is the most significant).
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def reference_gmac(key: bytes, iv12: bytes, aad: bytes) -> bytes:
    """GCM's tag for an empty plaintext, from its definition (SP 800-38D section 7.1)."""
    aes = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    hash_key = int.from_bytes(aes.update(bytes(16)), "big")
    blocks = aad + bytes(-len(aad) % 16) + (len(aad) * 8).to_bytes(8, "big") + bytes(8)
    y = 0
    for at in range(0, len(blocks), 16):
        y = _gf_mult(y ^ int.from_bytes(blocks[at : at + 16], "big"), hash_key)
    mask = int.from_bytes(aes.update(iv12 + b"\x00\x00\x00\x01"), "big")
    return (y ^ mask).to_bytes(16, "big")


@pytest.mark.parametrize(
    ("name", "integrity", "key", "iv12", "aad", "tag"), GMAC_CASES, ids=[c[0] for c in GMAC_CASES]
)
def test_gmac_vectors(
    name: str, integrity: Integrity, key: bytes, iv12: bytes, aad: bytes, tag: str
) -> None:
    auth = build_authenticator(integrity, key + iv12[:4])
    assert isinstance(auth, GmacAuthenticator)
    assert auth.sign(iv12[4:], aad) == H(tag)
    assert auth.verify(iv12[4:], aad, H(tag))
    assert not auth.verify(iv12[4:], aad + b"\x00", H(tag))
    assert not auth.verify(bytes(8) if any(iv12[4:]) else b"\x01" * 8, aad, H(tag))
    # The reference used below agrees with the published vectors.
    assert reference_gmac(key, iv12, aad) == H(tag)


def test_gmac_key_material_is_key_and_salt() -> None:
    assert [i.key_length for i in (Integrity.AES128GMAC, Integrity.AES192GMAC)] == [20, 28]
    assert Integrity.AES256GMAC.key_length == 36
    message = re.escape("aes128gmac key||salt must be 20 octets, got 16")
    with pytest.raises(ValueError, match=message):
        build_authenticator(Integrity.AES128GMAC, bytes(16))


# --- AES-GMAC in AH (RFC 4543 section 4) --------------------------------------------------

SPI = 0x51515151
GMAC_KEY = bytes(range(40, 40 + 32)) + H("c0ffee00")
OUTER = {4: ("198.51.100.1", "198.51.100.2"), 6: ("2001:db8:c::1", "2001:db8:d::2")}


def inner(version: int) -> bytes:
    header = (
        IP(src="10.9.0.1", dst="10.9.0.2")
        if version == 4
        else IPv6(src="2001:db8:9::1", dst="2001:db8:9::2")
    )
    return bytes(header / UDP(sport=7, dport=9) / Raw(b"gmac" * 9))


def parse(data: bytes) -> Packet:
    return IP(data) if data[0] >> 4 == 4 else IPv6(data)


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
def test_gmac_ah_layout_and_tag(mode: Mode, version: int, esn: bool) -> None:
    src, dst = OUTER[version]
    tunnel = mode is Mode.TUNNEL
    params = AhParams(
        SPI,
        Integrity.AES256GMAC,
        GMAC_KEY,
        mode=mode,
        esn=esn,
        src=src if tunnel else "*",
        dst=dst if tunnel else "*",
    )
    packet = inner(version)
    seq = (6 << 32) + 77 if esn else 77
    data = OutboundAhSa(params, 0.0).seal_with_seq(seq, packet)
    assert isinstance(data, bytes)
    parsed = parse(data)
    ah = parsed[AH]
    at = len(data) - len(bytes(ah))
    # Next header, payload length, reserved, SPI, low sequence half, then IV || tag ||
    # padding: 36 octets over IPv4, 40 over IPv6 (RFC 4543 erratum 3643).
    assert ah_length(Integrity.AES256GMAC, version) == (36 if version == 4 else 40)
    assert data[at + 1] == ah_length(Integrity.AES256GMAC, version) // 4 - 2
    assert (ah.spi, ah.seq) == (SPI, seq & 0xFFFFFFFF)
    iv = data[at + 12 : at + 20]
    assert iv == seq.to_bytes(8, "big")  # the counter: unique under the key
    tag = data[at + 20 : at + 36]
    assert data[at + 36 : at + ah_length(Integrity.AES256GMAC, version)] == bytes(
        ah_length(Integrity.AES256GMAC, version) - 36
    )
    # The AAD: the packet as scapy zeroes it for AH, with the IV left in place.
    zeroed = bytearray(bytes(zero_mutable_fields(parsed.copy(), sending=True)))
    zeroed[at + 12 : at + 20] = iv
    aad = bytes(zeroed) + ((seq >> 32).to_bytes(4, "big") if esn else b"")
    assert tag == reference_gmac(GMAC_KEY[:32], GMAC_KEY[32:] + iv, aad)

    def receiver() -> InboundAhSa:
        inbound = InboundAhSa(params, 0.0)
        inbound.replay.update(seq - 1)  # with ESN, the window places the high half
        return inbound

    assert receiver().decap(data, 0.0) == packet
    for at_flip in (at + 12, at + 20, len(data) - 1):  # IV, tag, payload
        forged = bytearray(data)
        forged[at_flip] ^= 0x80
        assert receiver().decap(bytes(forged), 0.0) is Drop.INTEGRITY
