"""The tunnel MTU: what ESP encapsulation costs per packet, and so the largest
cleartext packet the TUN device can take (:func:`tunnel_mtu`; ``routes`` and the
engine set the TUN MTU from it).

The TUN MTU is lowered so that a full-size cleartext packet still fits the underlay once
encapsulated (:func:`tunnel_mtu`). For the AEAD suites (AES-GCM-16, RFC 4106;
ChaCha20-Poly1305, RFC 7634) over UDP-encapsulated IPv4 on a 1500-byte underlay:

    outer IPv4 header          20   (RFC 791)
    UDP header                  8   (RFC 3948 section 2.1)
    ESP SPI + sequence number   8   (RFC 4303 section 2)
    IV                          8   (RFC 4106 section 3.1, RFC 7634 section 2)
    padding                   0-3   (RFC 4303 section 2.4: payload + 2 aligned to 4 bytes)
    pad length + next header    2   (RFC 4303 section 2.4, 2.6)
    ICV                        16   (RFC 4106 section 6, RFC 7634 section 2)
                               --
    60 bytes fixed, plus 0-3 of padding. 1500 - 60 = 1440 bytes are left for payload +
    trailer, a multiple of 4 already, so the largest cleartext packet is 1440 - 2 = 1438
    (a conservative "fixed + worst padding" sum would give 1435).

AES-CBC (RFC 3602) has a 16-byte IV and 16-byte blocks, and HMAC-SHA2-256-128 a 16-byte
ICV (RFC 4868), giving 1422; with HMAC-SHA2-512-256 (32-byte ICV) 1406. Raw ESP saves the
8 UDP bytes; an IPv6 underlay costs 20 more.
"""

from __future__ import annotations

from dataclasses import dataclass

IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
ESP_HEADER = 8
"""SPI and sequence number (RFC 4303 section 2)."""
ESP_TRAILER = 2
"""Pad length and next header (RFC 4303 section 2.4, 2.6)."""
MIN_TUNNEL_MTU = 576
"""RFC 791: every IPv4 host must accept 576-byte datagrams; a tunnel below that is useless."""


@dataclass(frozen=True)
class EspOverhead:
    """The per-packet cost of one ESP transform set."""

    iv: int
    block: int
    """Alignment of payload + trailer: the cipher block, at least 4 (RFC 4303 section 2.4)."""
    icv: int


AEAD_GCM16 = EspOverhead(iv=8, block=4, icv=16)
"""AES-GCM-16 (RFC 4106) and ChaCha20-Poly1305 (RFC 7634) alike."""
CBC_SHA256 = EspOverhead(iv=16, block=16, icv=16)
CBC_SHA384 = EspOverhead(iv=16, block=16, icv=24)
CBC_SHA512 = EspOverhead(iv=16, block=16, icv=32)


def tunnel_mtu(
    underlay_mtu: int = 1500,
    overhead: EspOverhead = AEAD_GCM16,
    *,
    ipv6_underlay: bool = False,
    udp_encap: bool = True,
) -> int:
    """The largest cleartext packet that fits ``underlay_mtu`` once ESP-encapsulated."""
    fixed = (IPV6_HEADER if ipv6_underlay else IPV4_HEADER) + (UDP_HEADER if udp_encap else 0)
    fixed += ESP_HEADER + overhead.iv + overhead.icv
    room = underlay_mtu - fixed
    # Payload + trailer is padded up to a multiple of the block size (RFC 4303 2.4).
    inner = (room // overhead.block) * overhead.block - ESP_TRAILER
    if inner < MIN_TUNNEL_MTU:
        raise ValueError(
            f"an underlay MTU of {underlay_mtu} leaves {inner} bytes for cleartext packets, "
            f"below the minimum of {MIN_TUNNEL_MTU}"
        )
    return inner
