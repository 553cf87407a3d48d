"""tshark judges the ESP-in-UDP (RFC 4303, RFC 3948) that our OutboundSa sends.

Real packets only: a child process in namespace a builds OutboundSas (AES-128-GCM,
AES-256-GCM, AES-CBC-128 + HMAC-SHA2-256-128, AES-CBC-256 + HMAC-SHA2-384-192 and
AES-CBC-256 + HMAC-SHA2-512-256, tunnel mode; Wireshark 4.0 has no ChaCha20-Poly1305)
and sends inner IPv4 ICMP and UDP packets carrying a marker over UDP 4500; dumpcap
captures them in namespace b, and tshark reads the capture with the keys from
``tshark_esp_options``. Wireshark's own code decides whether the ICV verifies and what
the payload decrypts to; every check is also run with a wrong key, so a check that
could not fail would show.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.tshark_lab import (
    ADDR_A,
    ADDR_B,
    esp_verdicts,
    make_lab,
)
from vpnfleet.agent.esp.keys import tshark_esp_options
from vpnfleet.agent.esp.sa import SaParams
from vpnfleet.agent.esp.transforms import Encryption, Integrity

ESP_PORT = 4500
INNER_SRC = "10.1.0.1"
INNER_DST = "10.2.0.1"
INNER_UDP_PORT = 40001
"""No dissector claims it, so the inner UDP payload shows as plain data."""
PACKETS_PER_SA = 4

ESP_SENDER = """
import socket
from vpnfleet.agent.esp.sa import Mode, OutboundSa, SaParams
from vpnfleet.agent.esp.transforms import Encryption, Integrity


def checksum(data):
    if len(data) % 2:
        data += b"\\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF).to_bytes(2, "big")


def ipv4(proto, body, ident):
    src, dst = (socket.inet_aton(a) for a in (PARAMS["inner_src"], PARAMS["inner_dst"]))
    header = (
        bytes([0x45, 0]) + (20 + len(body)).to_bytes(2, "big") + ident.to_bytes(2, "big")
        + b"\\x40\\x00" + bytes([64, proto]) + b"\\0\\0" + src + dst
    )
    return header[:10] + checksum(header) + header[12:] + body


def icmp_echo(marker, seq):
    # RFC 792: type 8 (echo request), code 0, checksum, identifier, sequence number.
    body = bytes([8, 0, 0, 0]) + (0x7666).to_bytes(2, "big") + seq.to_bytes(2, "big") + marker
    return ipv4(1, body[:2] + checksum(body) + body[4:], seq)


def udp(marker, seq):
    # The UDP checksum is optional over IPv4 (RFC 768): 0 means none.
    length = (8 + len(marker)).to_bytes(2, "big")
    body = (40000).to_bytes(2, "big") + PARAMS["udp_port"].to_bytes(2, "big") + length
    return ipv4(17, body + b"\\0\\0" + marker, seq)


sas = []
for sa in PARAMS["sas"]:
    params = SaParams(
        spi=sa["spi"],
        encryption=Encryption(sa["encryption"]),
        enc_key=bytes.fromhex(sa["enc_key"]),
        integrity=Integrity(sa["integrity"]) if sa["integrity"] else None,
        integ_key=bytes.fromhex(sa["integ_key"]),
        mode=Mode.TUNNEL,
        src=PARAMS["src"],
        dst=PARAMS["dst"],
    )
    sas.append((sa["name"], OutboundSa(params, 0.0)))

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((PARAMS["src"], PARAMS["port"]))
sent = []
for n in range(1, PARAMS["count"] + 1):
    for name, sa in sas:
        marker = f"vpnfleet-esp-marker {name} #{n}".encode()
        inner = icmp_echo(marker, n) if n % 2 else udp(marker, n)
        packet = sa.encap(inner, 4, float(n))
        sock.sendto(packet, (PARAMS["dst"], PARAMS["port"]))
        sent.append({"sa": name, "spi": sa.spi, "seq": sa.seq,
                     "marker": marker.hex(), "inner": inner.hex()})
sock.close()
print(json.dumps({"sent": sent}), flush=True)
"""


@dataclass(frozen=True)
class EspSuite:
    name: str
    encryption: Encryption
    integrity: Integrity | None


ESP_SUITES = (
    EspSuite("aes128gcm16", Encryption.AES128GCM16, None),
    EspSuite("aes256gcm16", Encryption.AES256GCM16, None),
    EspSuite("aes128-sha256", Encryption.AES128, Integrity.HMAC_SHA2_256_128),
    EspSuite("aes256-sha384", Encryption.AES256, Integrity.HMAC_SHA2_384_192),
    EspSuite("aes256-sha512", Encryption.AES256, Integrity.HMAC_SHA2_512_256),
)
CBC_SUITES = tuple(s for s in ESP_SUITES if s.integrity is not None)


def _esp_params(suite: EspSuite, spi: int) -> SaParams:
    integrity = suite.integrity
    return SaParams(
        spi=spi,
        encryption=suite.encryption,
        enc_key=secrets.token_bytes(suite.encryption.key_length),
        integrity=integrity,
        integ_key=secrets.token_bytes(integrity.key_length) if integrity else b"",
        src=ADDR_A,
        dst=ADDR_B,
    )


def _child_sa_json(name: str, params: SaParams) -> dict[str, Any]:
    return {
        "name": name,
        "spi": params.spi,
        "encryption": params.encryption.value,
        "enc_key": params.enc_key.hex(),
        "integrity": params.integrity.value if params.integrity else None,
        "integ_key": params.integ_key.hex(),
    }


@dataclass(frozen=True)
class SentEsp:
    sa: str
    spi: int
    seq: int
    marker: bytes
    inner: bytes


@dataclass(frozen=True)
class EspCapture:
    pcap: Path
    sas: dict[str, SaParams]
    sent: list[SentEsp]


@pytest.fixture(scope="module")
def esp_capture() -> Iterator[EspCapture]:
    """ESP-in-UDP from real OutboundSas, one SA per suite, captured once for the module."""
    with make_lab() as lab:
        sas = {suite.name: _esp_params(suite, 0xC0DE0100 + i) for i, suite in enumerate(ESP_SUITES)}
        count = PACKETS_PER_SA * len(sas)
        capture = lab.start_capture("esp", f"udp port {ESP_PORT}", count)
        sender = lab.run(
            lab.a,
            ESP_SENDER,
            sas=[_child_sa_json(name, params) for name, params in sas.items()],
            count=PACKETS_PER_SA,
            src=ADDR_A,
            dst=ADDR_B,
            port=ESP_PORT,
            inner_src=INNER_SRC,
            inner_dst=INNER_DST,
            udp_port=INNER_UDP_PORT,
        )
        sent = [
            SentEsp(
                s["sa"], s["spi"], s["seq"], bytes.fromhex(s["marker"]), bytes.fromhex(s["inner"])
            )
            for s in sender.line()["sent"]
        ]
        assert len(sent) == count
        yield EspCapture(capture.wait(), sas, sent)


def _with_flipped(params: SaParams, *, enc: bool = False, integ: bool = False) -> SaParams:
    """The same SA with one bit of a key changed."""

    def flip(key: bytes) -> bytes:
        return key[:-1] + bytes([key[-1] ^ 0x01])

    return replace(
        params,
        enc_key=flip(params.enc_key) if enc else params.enc_key,
        integ_key=flip(params.integ_key) if integ else params.integ_key,
    )


@pytest.mark.netns
def test_esp_capture_is_dissected_as_rfc3948_esp_in_udp(esp_capture: EspCapture) -> None:
    verdicts = esp_verdicts(esp_capture.pcap, [])
    assert [(v.spi, v.seq) for v in verdicts] == [(s.spi, s.seq) for s in esp_capture.sent]
    for verdict in verdicts:
        assert verdict.ports == (ESP_PORT, ESP_PORT)
        assert verdict.udp_encap
        assert not verdict.malformed
        # Without keys tshark must not claim anything about the payload.
        assert verdict.icv_good is None and verdict.contained is None


@pytest.mark.netns
@pytest.mark.parametrize("suite", ESP_SUITES, ids=lambda s: s.name)
def test_esp_tshark_decrypts_and_verifies_every_packet(
    esp_capture: EspCapture, suite: EspSuite
) -> None:
    options = tshark_esp_options(esp_capture.sas.values())
    params = esp_capture.sas[suite.name]
    sent = [s for s in esp_capture.sent if s.sa == suite.name]
    verdicts = [v for v in esp_verdicts(esp_capture.pcap, options) if v.spi == params.spi]
    # RFC 4303 section 3.3.3: the first packet of an SA carries sequence number 1.
    assert [v.seq for v in verdicts] == [s.seq for s in sent] == list(range(1, PACKETS_PER_SA + 1))
    for verdict, packet in zip(verdicts, sent, strict=True):
        where = f"{suite.name} seq {packet.seq}"
        assert verdict.icv_good is True, f"{where}: ICV not verified by tshark"
        assert verdict.contained == packet.inner, f"{where}: decrypted payload differs"
        assert packet.marker in verdict.contained, where
        assert verdict.next_header == 4, f"{where}: tunnel mode carries IPv4 (next header 4)"
        assert verdict.inner_addresses == (INNER_SRC, INNER_DST), where
        assert not verdict.malformed, where


@pytest.mark.netns
@pytest.mark.parametrize("suite", ESP_SUITES, ids=lambda s: s.name)
def test_esp_wrong_encryption_key_is_caught(esp_capture: EspCapture, suite: EspSuite) -> None:
    params = esp_capture.sas[suite.name]
    wrong = _with_flipped(params, enc=True)
    verdicts = [
        v
        for v in esp_verdicts(esp_capture.pcap, tshark_esp_options([wrong]))
        if v.spi == params.spi
    ]
    sent = [s for s in esp_capture.sent if s.sa == suite.name]
    assert len(verdicts) == len(sent)
    for verdict, packet in zip(verdicts, sent, strict=True):
        assert verdict.contained != packet.inner
        if suite.integrity is None:
            # AES-GCM: the tag is keyed by the encryption key, so it never checks out.
            # Depending on what the garbage plaintext's trailer says, tshark reports a bad
            # ICV, gives up on the packet as malformed, or stops before the ICV (a pad
            # length past the payload): never a good ICV.
            assert verdict.icv_good is not True, verdict
        else:
            # CBC + HMAC: the ICV is over the ciphertext, keyed by the integrity key only,
            # so it never fails — tshark reports it good, unless the garbage plaintext's
            # trailer makes it stop before the ICV.
            assert verdict.icv_good is not False, verdict


@pytest.mark.netns
@pytest.mark.parametrize("suite", CBC_SUITES, ids=lambda s: s.name)
def test_esp_wrong_integrity_key_fails_the_icv_although_cbc_decrypts(
    esp_capture: EspCapture, suite: EspSuite
) -> None:
    """Why the tests insist on icv_good: CBC decrypts whatever the integrity key."""
    params = esp_capture.sas[suite.name]
    wrong = _with_flipped(params, integ=True)
    verdicts = [
        v
        for v in esp_verdicts(esp_capture.pcap, tshark_esp_options([wrong]))
        if v.spi == params.spi
    ]
    sent = [s for s in esp_capture.sent if s.sa == suite.name]
    assert len(verdicts) == len(sent)
    for verdict, packet in zip(verdicts, sent, strict=True):
        assert verdict.icv_good is False
        assert verdict.contained == packet.inner
