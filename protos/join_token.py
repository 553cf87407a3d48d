"""The join token as text, shared by the controller that makes it and the host that uses it.

    vfj1.<id>.<secret>.<ca-sha256>

``id`` (16 hex digits) names the token in the controller's list, audit log and
``vpnfleet token revoke``; ``secret`` (32 characters of URL-safe base64, 192 bits) is
what proves the holder; ``ca-sha256`` is the hex SHA-256 of the fleet CA certificate's
DER encoding (what ``vpnfleet ca show`` prints as its fingerprint). The host trusts
the join service only if it presents a chain holding that very CA, as kubeadm's
``--discovery-token-ca-cert-hash`` does, so a token cannot be replayed to a look-alike
service and the host needs nothing else to start.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PREFIX = "vfj1"
_ID, _SECRET, _HASH = r"[0-9a-f]{16}", r"[A-Za-z0-9_-]{32}", r"[0-9a-f]{64}"
_TOKEN_RE = re.compile(rf"^{PREFIX}\.({_ID})\.({_SECRET})\.({_HASH})$")


def well_formed(token_id: str, secret: str) -> bool:
    """True when ``token_id`` and ``secret`` have the form of a token's parts."""
    return re.fullmatch(_ID, token_id) is not None and re.fullmatch(_SECRET, secret) is not None


class TokenFormatError(ValueError):
    """The text is not a join token; the message says what it should look like."""


@dataclass(frozen=True, slots=True)
class JoinToken:
    token_id: str
    secret: str
    ca_sha256: str

    @classmethod
    def new(cls, ca_sha256: str) -> JoinToken:
        return cls(secrets.token_hex(8), secrets.token_urlsafe(24), ca_sha256)

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        match = _TOKEN_RE.match(text.strip())
        if match is None:
            raise TokenFormatError(
                "not a join token: expected vfj1.<16 hex id>.<32-character secret>."
                "<64 hex CA hash>, as `vpnfleet token create` prints it"
            )
        return cls(*match.groups())

    def __str__(self) -> str:
        return f"{PREFIX}.{self.token_id}.{self.secret}.{self.ca_sha256}"

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"JoinToken(token_id={self.token_id!r}, ca_sha256={self.ca_sha256[:16]}…)"
