"""Per-pair pre-shared keys and certificate credentials.

PSK for the pair {a, b} at epoch e (RFC 5869 HKDF with SHA-256)::

    PRK = HKDF-Extract(salt = e as 8 bytes big-endian, IKM = master_secret)
    PSK = HKDF-Expand(PRK, info = b"vpnfleet psk" || min(a,b) || 0x00 || max(a,b), L = 32)

Both ends sort the names, so both derive the same key without talking to each other;
the NUL keeps ("ab", "c") and ("a", "bc") apart (names never contain NUL). Rotation is a
new epoch: a pair uses the larger ``psk_epoch`` of its two hosts, so raising it on one
host rotates that host's pairs, and raising it in ``group_vars/all`` rotates them all.

The extract step runs once per epoch; each pair only costs the expand step, which for
32 bytes is a single HMAC (T(1) = HMAC(PRK, info || 0x01)). The HMAC key pads are
hashed once too (RFC 2104: HMAC = H(K^opad || H(K^ipad || m))), and each pair resumes
copies of those two hash states: this runs once per pair of a 1,000-host mesh.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .model import AuthMethod, Credential, fast_constructor

PSK_SIZE = 32
_INFO = b"vpnfleet psk"
_BLOCK = 64  # SHA-256 block size, RFC 2104 "B"
_new_credential = fast_constructor(Credential)


class PairKeys:
    """Derives pair PSKs from one master secret, keeping the per-epoch PRK pads."""

    def __init__(self, master_secret: bytes) -> None:
        if len(master_secret) < 16:
            raise ValueError("the master secret must be at least 16 bytes")
        self._master = bytes(master_secret)
        self._pads: dict[int, tuple[hashlib._Hash, hashlib._Hash]] = {}

    def _epoch_pads(self, epoch: int) -> tuple[hashlib._Hash, hashlib._Hash]:
        pads = self._pads.get(epoch)
        if pads is None:
            salt = epoch.to_bytes(8, "big")
            prk = hmac.digest(salt, self._master, "sha256")  # HKDF-Extract
            key = prk.ljust(_BLOCK, b"\0")
            inner = hashlib.sha256(bytes(k ^ 0x36 for k in key))
            outer = hashlib.sha256(bytes(k ^ 0x5C for k in key))
            inner.update(_INFO)  # every info string starts with it
            pads = self._pads[epoch] = (inner, outer)
        return pads

    def psk(self, a: str, b: str, epoch: int) -> bytes:
        """The 32-byte key of the pair {a, b}; argument order does not matter."""
        low, high = (a, b) if a < b else (b, a)
        inner, outer = self._pads.get(epoch) or self._epoch_pads(epoch)
        i = inner.copy()
        i.update(f"{low}\0{high}\x01".encode())
        o = outer.copy()
        o.update(i.digest())
        return o.digest()

    def credential(self, low: str, high: str, epoch: int) -> Credential:
        """The PSK credential both ends of {low, high} carry (one shared object).

        ``low`` must sort before ``high``; this runs once per pair of the fleet.
        """
        inner, outer = self._pads.get(epoch) or self._epoch_pads(epoch)
        i = inner.copy()
        i.update(f"{low}\0{high}\x01".encode())
        o = outer.copy()
        o.update(i.digest())
        return _new_credential(
            method=AuthMethod.PSK,
            reference=f"psk:{low}+{high}/epoch-{epoch}",
            psk=o.digest(),
            epoch=epoch,
        )


class CertificateError(ValueError):
    """A trust anchor that is not a PEM X.509 certificate."""


def ca_fingerprint(pem: bytes) -> str:
    """Hex SHA-256 of a CA certificate's DER encoding."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM X.509 certificate: {exc}") from None
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def pubkey_credential(
    pem: bytes, name: str = "fleet-ca", also: tuple[bytes, ...] = ()
) -> Credential:
    """Certificate authentication anchored at the CA ``pem`` (RFC 7427 signatures), and
    at the CAs ``also`` too (the next fleet CA while a CA rotation runs)."""
    accepted = tuple(ca_fingerprint(p) for p in also)
    return Credential(
        method=AuthMethod.PUBKEY,
        reference=f"cert:{name}",
        ca_fingerprint=ca_fingerprint(pem),
        accepted_ca_fingerprints=accepted,
    )
