"""Render SA keys in Wireshark's ``esp_sa`` UAT format, for debugging with tshark.

One record per SA direction, the same text in an ``esp_sa`` file under a Wireshark
profile or after ``-o uat:esp_sa:`` on tshark's command line:

    "IPv4","SRC","DST","0xSPI","ENCRYPTION","0xKEY","AUTHENTICATION","0xAUTHKEY"

Names are spelled as Wireshark's ESP dissector lists them. GCM and ChaCha20-Poly1305
keys carry their 4-byte salt at the end; AEAD SAs have authentication "NULL" and an
empty key. Wireshark 4.0 has no ChaCha20-Poly1305 entry (later versions do), so such
a record only decrypts on a newer tshark. Strings only: writing them anywhere is the
caller's choice, and they are secrets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .sa import InboundSa, OutboundSa, SaParams
from .transforms import Encryption, Integrity

WIRESHARK_ENCRYPTION = {
    Encryption.AES128GCM16: "AES-GCM with 16 octet ICV [RFC4106]",
    Encryption.AES256GCM16: "AES-GCM with 16 octet ICV [RFC4106]",
    Encryption.CHACHA20POLY1305: "ChaCha20 with Poly1305 [RFC7634]",
    Encryption.AES128: "AES-CBC [RFC3602]",
    Encryption.AES256: "AES-CBC [RFC3602]",
}

WIRESHARK_AUTHENTICATION = {
    Integrity.HMAC_SHA2_256_128: "HMAC-SHA-256-128 [RFC4868]",
    Integrity.HMAC_SHA2_384_192: "HMAC-SHA-384-192 [RFC4868]",
    Integrity.HMAC_SHA2_512_256: "HMAC-SHA-512-256 [RFC4868]",
    Integrity.HMAC_SHA1_96: "HMAC-SHA-1-96 [RFC2404]",
}
"""ESP's integrity transforms; Wireshark's ESP table has no AES-GMAC integrity (AH only)."""


def _family(params: SaParams, default: str) -> str:
    for address in (params.src, params.dst):
        if address != "*":
            return "IPv4" if ipaddress.ip_address(address).version == 4 else "IPv6"
    return default


def esp_sa_record(sa: InboundSa | OutboundSa | SaParams, family: str = "IPv4") -> str:
    """One ``esp_sa`` UAT record. ``family`` is used only when both addresses are *."""
    if family not in ("IPv4", "IPv6"):
        raise ValueError(f"family must be 'IPv4' or 'IPv6', got {family!r}")
    params = sa if isinstance(sa, SaParams) else sa.params
    fields = [
        _family(params, family),
        params.src,
        params.dst,
        f"0x{params.spi:08x}",
        WIRESHARK_ENCRYPTION[params.encryption],
        f"0x{params.enc_key.hex()}",
    ]
    if params.integrity is None:
        fields += ["NULL", ""]
    else:
        fields += [WIRESHARK_AUTHENTICATION[params.integrity], f"0x{params.integ_key.hex()}"]
    return ",".join(f'"{field}"' for field in fields)


def tshark_esp_options(sas: Iterable[InboundSa | OutboundSa | SaParams]) -> list[str]:
    """tshark arguments that decrypt and check these SAs' ESP (one ``-o`` per SA)."""
    options = [
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
    ]
    for sa in sas:
        options += ["-o", f"uat:esp_sa:{esp_sa_record(sa)}"]
    return options
