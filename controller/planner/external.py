"""Gateways vpnfleet does not manage (``external_peers`` in topology.yaml).

A gateway with no fixed address (a dynamic address, or behind a NAT whose public address
is not known) is declared ``address: any`` with its ``identity``: the managed hosts only
respond to it, take its IKE_SA_INIT from whatever source it comes, and know it by its
IKE identity at IKE_AUTH (strongSwan's ``remote_addrs = %any`` with a remote ``id``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vpnfleet.controller.inventory import Mark, aggressive_mode_exposure, did_you_mean, mark_of

from .checks import TopologyChecker, describe
from .credentials import CertificateError, ca_fingerprint
from .model import AuthMethod, Identity, IkeVersion, Proposal, identity_of
from .profile import AUTH_METHODS, IKE_VERSIONS
from .proposals import ProposalKind

EXTERNAL_KEYS = (
    "name",
    "address",
    "identity",
    "auth",
    "psk",
    "ca",
    "subnets",
    "ike_proposals",
    "esp_proposals",
    "connect",
    "port",
    "ike_version",
    "ike_aggressive",
)


ANY_ADDRESS = "any"


@dataclass(frozen=True, slots=True)
class ExternalPeer:
    name: str
    address: str | None  # None: ``address: any``, the peer is known by its identity only
    identity: Identity
    auth: AuthMethod
    psk: str
    ca_pem: bytes
    ca_fingerprint: str
    subnets: tuple[str, ...]
    ike_proposals: tuple[Proposal, ...]
    esp_proposals: tuple[Proposal, ...]
    port: int
    mark: Mark | None
    ike_version: IkeVersion = IkeVersion.V2
    aggressive: bool = False  # IKEv1 Aggressive Mode (ike_aggressive)


def parse_external(
    ck: TopologyChecker, entry: Mapping[str, Any], what: str, unique: Callable[..., None]
) -> tuple[ExternalPeer, list[str]] | None:
    """One ``external_peers`` entry, and the managed hosts that connect to it."""
    ck.keys(entry, what, EXTERNAL_KEYS, ("name", "address", "subnets"))
    name = ck.string(entry, "name", what)
    if name is not None and name in ck.inventory.hosts:
        ck.error(f"{what}: name {name!r} is a host of the inventory; pick another", name)
        name = None
    unique(name, what, entry.get("name"))
    address = None
    dynamic = False
    raw_address = ck.string(entry, "address", what)
    if raw_address is not None and raw_address.strip() == ANY_ADDRESS:
        dynamic = True
    elif raw_address is not None:
        try:
            address = ipaddress.ip_address(raw_address.strip()).compressed
        except ValueError:
            ck.error(
                f"{what}: address: {raw_address!r} is not an IP address (or 'any' for a "
                "peer with no fixed address)",
                raw_address,
            )
    identity_text = ck.string(entry, "identity", what) or address
    if dynamic and "identity" not in entry:
        ck.error(
            f"{what}: address any needs 'identity': the peer is known by its IKE identity "
            "alone (e.g. identity: gw.partner.example)",
            raw_address,
        )
    written = entry.get("auth", "psk")
    auth = AUTH_METHODS.get(written) if isinstance(written, str) else None
    psk, ca_pem, fingerprint = "", b"", ""
    ok = True
    if auth is None:
        hint = did_you_mean(str(written), tuple(AUTH_METHODS))
        ck.error(f"{what}: auth: expected psk or pubkey, got {describe(written)}{hint}", written)
        ok = False
    elif auth is AuthMethod.PSK:
        if not isinstance(entry.get("psk"), str) or len(entry["psk"]) < 16:
            ck.error(f"{what}: auth psk needs 'psk' (a string of at least 16 characters)", entry)
            ok = False
        else:
            psk = str(entry["psk"])
    else:
        pem = ck.string(entry, "ca", what)
        if pem is None:
            ck.error(f"{what}: auth pubkey needs 'ca' (the PEM of its CA certificate)", entry)
            ok = False
        else:
            try:
                ca_pem = str(pem).encode()
                fingerprint = ca_fingerprint(ca_pem)
            except CertificateError as exc:
                ck.error(f"{what}: ca: {exc}", pem)
                ok = False
    port = entry.get("port", 500)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        ck.error(f"{what}: port: expected an integer 1..65535, got {describe(port)}", port)
        ok = False
    written_version = entry.get("ike_version", 2)
    version = None
    if isinstance(written_version, int) and not isinstance(written_version, bool):
        version = IKE_VERSIONS.get(int(written_version))
    if version is None:
        ck.error(
            f"{what}: ike_version: expected 1 (IKEv1) or 2 (IKEv2), got "
            f"{describe(written_version)}",
            written_version,
        )
        ok = False
    aggressive = entry.get("ike_aggressive", False)
    if not isinstance(aggressive, bool):
        ck.error(
            f"{what}: ike_aggressive: expected true or false, got {describe(aggressive)}",
            aggressive,
        )
        ok = False
    elif aggressive and version is IkeVersion.V2:
        ck.error(
            f"{what}: ike_aggressive asks for IKEv1 Aggressive Mode, but ike_version is 2: "
            "set ike_version: 1 beside it, or remove ike_aggressive",
            entry,
        )
        ok = False
    elif aggressive and version is IkeVersion.V1 and auth is not None:
        auth_word = "psk" if auth is AuthMethod.PSK else "pubkey"
        ck.warn(
            f"{what}: ike_aggressive with auth {auth_word}: {aggressive_mode_exposure(auth_word)}",
            entry,
        )
    subnets = ck.prefixes(entry, "subnets", what)
    ike = ck.proposals(entry, "ike_proposals", what, ProposalKind.IKE, version)
    esp = ck.proposals(entry, "esp_proposals", what, ProposalKind.ESP, version)
    hosts = ck.pattern(entry, "connect", what)
    if not ok or None in (name, identity_text, subnets, hosts) or (address is None) != dynamic:
        return None
    assert name is not None and identity_text is not None
    assert subnets is not None and hosts is not None and auth is not None
    assert version is not None
    peer = ExternalPeer(
        name=name,
        address=address,
        identity=identity_of(identity_text),
        auth=auth,
        psk=psk,
        ca_pem=ca_pem,
        ca_fingerprint=fingerprint,
        subnets=subnets,
        ike_proposals=ike,
        esp_proposals=esp,
        port=int(port),
        mark=mark_of(entry),
        ike_version=version,
        aggressive=aggressive,
    )
    return peer, hosts
