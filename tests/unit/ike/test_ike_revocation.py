"""A peer certificate that a CRL in force revokes fails IKE_AUTH, on either role."""

from __future__ import annotations

from dataclasses import replace

from tests.support.certs import dns, with_certs
from tests.support.ike_peers import Peers, left_right
from vpnfleet.agent.ike.config import IkeConfig
from vpnfleet.agent.ike.constants import NotifyType
from vpnfleet.agent.ike.events import IkeSaEstablished, IkeSaFailed
from vpnfleet.agent.ike.states import IkeSaState


def _revoking(config: IkeConfig, other: IkeConfig) -> IkeConfig:
    """``config`` with a CRL in force that lists ``other``'s certificate."""
    assert config.certificates is not None and other.certificates is not None
    cert = other.certificates.certificate
    revoked = frozenset({(cert.issuer.public_bytes(), cert.serial_number)})
    return replace(config, certificates=replace(config.certificates, revoked=revoked))


def _pair() -> tuple[IkeConfig, IkeConfig]:
    left, right = left_right()
    return with_certs(left, "ecdsa", dns("left.example")), with_certs(
        right, "ecdsa", dns("right.example")
    )


def test_responder_refuses_a_revoked_initiator() -> None:
    left, right = _pair()
    peers = Peers(left, _revoking(right, left))
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    (failed,) = peers.right.of(IkeSaFailed)
    serial = left.certificates.certificate.serial_number  # type: ignore[union-attr]
    assert failed.reason == (
        f"AUTHENTICATION_FAILED: certificate CN=gw,O=vpnfleet test (serial {serial:x}) "
        "is revoked by the CRL of CN=Test CA,O=vpnfleet test"
    )
    assert failed.notify == NotifyType.AUTHENTICATION_FAILED
    assert peers.left.sa.state is not IkeSaState.ESTABLISHED


def test_initiator_refuses_a_revoked_responder() -> None:
    left, right = _pair()
    peers = Peers(_revoking(left, right), right)
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    (failed,) = peers.left.of(IkeSaFailed)
    assert failed.reason.startswith("AUTHENTICATION_FAILED: certificate CN=gw")
    assert "is revoked by the CRL of CN=Test CA" in failed.reason
    assert peers.left.of(IkeSaEstablished) == []


def test_a_crl_listing_someone_else_changes_nothing() -> None:
    left, right = _pair()
    stranger, _ = _pair()
    peers = Peers(_revoking(left, stranger), _revoking(right, stranger))
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    assert peers.left.sa.state is peers.right.sa.state is IkeSaState.ESTABLISHED
