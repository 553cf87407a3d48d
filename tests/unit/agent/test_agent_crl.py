"""CRLs in a plan: checked against the plan's trust anchors before the plan is used
(wrong signer, stale nextUpdate), and looked up by issuer and serial."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.certs import NOW, make_ca, make_leaf, new_key
from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.crl import certificate_key, read_crl, revoked_set
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.plan import PlanRejected
from vpnfleet.controller.statedir.pki import CertKind, IssuedCertificate, issue_crl
from vpnfleet.protos.hashing import plan_content_hash

FLEET_CA = make_ca("Fleet CA")
ROGUE_CA = make_ca("Fleet CA")  # the same name, another key: a forgery
LEAF = make_leaf(FLEET_CA, "b1", new_key("ecdsa"), [x509.DNSName("b1")])
OTHER = make_leaf(FLEET_CA, "c1", new_key("ecdsa"), [x509.DNSName("c1")])


def crl(ca: tuple[x509.Certificate, object], *certs: x509.Certificate, days: float = 30) -> bytes:
    revoked = [
        IssuedCertificate("b1", CertKind.IKE, c.serial_number, "", c.not_valid_after_utc, NOW)
        for c in certs
    ]
    return issue_crl(ca[0], ca[1], revoked, 1, NOW, days=days)  # type: ignore[arg-type]


def plan_with(*crls: bytes, anchor: x509.Certificate = FLEET_CA[0]):  # type: ignore[no-untyped-def]
    msg = sample_plan("a1", "10.0.0.1", "10.1.0.0/24", [("b1", "10.0.0.2", "10.2.0.0/24")])
    msg.trust_anchors.append(anchor.public_bytes(serialization.Encoding.PEM))
    msg.crls.extend(crls)
    msg.content_hash = plan_content_hash(msg)
    return msg


def test_serial_lookup() -> None:
    checked, problem = read_crl(crl(FLEET_CA, LEAF), [FLEET_CA[0]], NOW)
    assert problem is None
    revoked = revoked_set([checked])
    assert certificate_key(LEAF) in revoked
    assert certificate_key(OTHER) not in revoked
    # Same serial under another issuer name is another certificate (RFC 5280 5.3.3).
    elsewhere = make_leaf(make_ca("Other CA"), "b1", new_key("ecdsa"), [x509.DNSName("b1")])
    assert (elsewhere.issuer.public_bytes(), LEAF.serial_number) not in revoked


def test_plan_carries_what_its_crl_revokes() -> None:
    plan = plan_from_proto(plan_with(crl(FLEET_CA, LEAF)), now=NOW)
    assert plan.revoked == {certificate_key(LEAF)}
    assert plan_from_proto(plan_with(), now=NOW).revoked == frozenset()


def test_crl_not_signed_by_the_fleet_ca_rejects_the_plan() -> None:
    with pytest.raises(PlanRejected) as info:
        plan_from_proto(plan_with(crl(ROGUE_CA, LEAF)), now=NOW)
    assert info.value.reasons == [
        "crls[0]: refused: the signature of this CRL does not verify with the key of trust "
        "anchor CN=Fleet CA,O=vpnfleet test: it was not issued by the fleet CA"
    ]


def test_crl_of_a_ca_the_plan_does_not_trust_rejects_the_plan() -> None:
    with pytest.raises(PlanRejected) as info:
        plan_from_proto(plan_with(crl(make_ca("Stranger CA"), LEAF)), now=NOW)
    assert info.value.reasons == [
        "crls[0]: refused: issued by CN=Stranger CA,O=vpnfleet test, which is none of the "
        "plan's trust anchors"
    ]


def test_stale_crl_rejects_a_plan_handed_in_but_not_the_stored_one() -> None:
    msg = plan_with(crl(FLEET_CA, LEAF, days=1))
    later = NOW + datetime.timedelta(days=2)
    with pytest.raises(PlanRejected) as info:
        plan_from_proto(msg, now=later)
    (reason,) = info.value.reasons
    assert reason.startswith("crls[0]: refused: the CRL of CN=Fleet CA,O=vpnfleet test is stale")
    assert "nextUpdate" in reason
    # The stored plan at a restart: its revocations still hold.
    assert plan_from_proto(msg).revoked == {certificate_key(LEAF)}


def test_garbage_crl_is_named() -> None:
    with pytest.raises(PlanRejected) as info:
        plan_from_proto(plan_with(b"not a crl"), now=NOW)
    assert info.value.reasons == ["crls[0]: not a PEM X.509 CRL"]
