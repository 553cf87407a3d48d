"""Render an ISAKMP SA's key as a Wireshark ``ikev1_decryption_table`` UAT record.

One record per ISAKMP SA, the same text in an ``ikev1_decryption_table`` file under a
Wireshark profile or after ``-o uat:ikev1_decryption_table:`` on tshark's command line:

    ICOOKIE,ENCRYPTION_KEY

the initiator's cookie (8 bytes) and the cipher key Ka (RFC 2409 Appendix B, after
any expansion), both bare hex. Nothing else is needed: Wireshark reads the cipher
and hash from the Main Mode SA payload and computes the IV chains of Appendix B
itself from the cleartext KE payloads, so it must see the whole exchange from
message 1. Checked with tshark 4.0.17 on charon's Main Mode, Quick Mode and
informational messages (tests/integration/test_v1_keys_tshark.py). Strings only:
writing them anywhere is the caller's choice, and they are secrets.
"""

from __future__ import annotations

from ..errors import LocalError
from .keys import Phase1Keys

_COOKIE_LENGTH = 8  # RFC 2408 section 3.1


def ikev1_decryption_record(icookie: bytes, keys: Phase1Keys) -> str:
    """One ``ikev1_decryption_table`` record for an ISAKMP SA's initiator cookie and
    keys. Raises LocalError when the cookie is not 8 bytes."""
    if not isinstance(icookie, bytes) or len(icookie) != _COOKIE_LENGTH:
        raise LocalError(f"initiator cookie must be {_COOKIE_LENGTH} bytes, got {icookie!r}")
    return f"{icookie.hex()},{keys.enc_key.hex()}"


def tshark_ikev1_options(sas: list[tuple[bytes, Phase1Keys]]) -> list[str]:
    """tshark arguments that decrypt these ISAKMP SAs' messages (one ``-o`` per SA),
    each given as (initiator cookie, keys)."""
    options: list[str] = []
    for icookie, keys in sas:
        options += ["-o", f"uat:ikev1_decryption_table:{ikev1_decryption_record(icookie, keys)}"]
    return options
