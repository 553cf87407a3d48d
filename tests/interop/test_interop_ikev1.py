"""Our IKEv1 core against a real strongSwan charon (Debian 5.9, ``version = 1``) in
network namespaces: Main mode with a pre-shared key, then Quick mode, each side
initiating; Quick mode with PFS; Delete and DPD.

charon runs with kernel-libipsec, which always claims a NAT (INTEROP.md), so every
test also exercises NAT traversal (RFC 3947): NAT-D, the float to UDP 4500 with the
non-ESP marker, and the UDP-encapsulated tunnel mode in Quick mode. What charon
reports through ``swanctl --list-sas --raw`` is compared with our events. Each test
gets fresh namespaces and a charon of its own, removed whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.test_interop_ike import _certificates, charon_secrets
from tests.support.charon import (
    CHARON_ADDR,
    CHARON_ID,
    CHARON_NET,
    OUR_ADDR,
    OUR_ID,
    OUR_NET,
    PSK,
    SWANCTL,
    Charon,
    connection,
    interop_setup,
    our_spec,
    run,
    skip_reason,
)
from tests.support.ike_v1_driver import V1Peer

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

IKE = "aes256-sha256-modp2048"
ESP = "aes128-sha256"


class Lab:
    def __init__(self, charon: Charon, our_ns: str, directory: Any) -> None:
        self.charon, self.our_ns, self.dir = charon, our_ns, directory
        self.ours: V1Peer | None = None

    def load(
        self,
        ike: str,
        esp: str,
        *,
        charon_initiates: bool,
        aggressive: bool = False,
        certs: dict[str, str] | None = None,
        dpd_delay: str = "0",
        reauth_time: str = "0",
        transport: bool = False,
        **extra: Any,
    ) -> V1Peer:
        session = self.charon.session()
        if certs is None:
            session.load_shared({"type": "IKE", "data": PSK, "owners": [OUR_ID, CHARON_ID]})
        else:
            session.load_cert(
                {"type": "X509", "flag": "CA", "data": Path(certs["ca"]).read_bytes()}
            )
            charon_cert = Path(certs["charon_cert"]).read_bytes()
            session.load_cert({"type": "X509", "flag": "NONE", "data": charon_cert})
            session.load_key({"type": "any", "data": Path(certs["charon_key"]).read_bytes()})
        conn = connection(ike, esp, initiator=charon_initiates, certs=certs is not None)
        if certs is not None:
            conn["net-ike"]["local"]["certs"] = [charon_cert]
        conn["net-ike"]["version"] = "1"
        conn["net-ike"]["reauth_time"] = reauth_time
        conn["net-ike"]["dpd_delay"] = dpd_delay
        if aggressive:
            conn["net-ike"]["aggressive"] = "yes"
        if transport:
            child = conn["net-ike"]["children"]["net"]
            child["mode"] = "transport"
            child["local_ts"], child["remote_ts"] = [f"{CHARON_ADDR}/32"], [f"{OUR_ADDR}/32"]
        session.load_conn(conn)
        ours = {k: v for k, v in (certs or {}).items() if k in ("cert", "key", "ca")}
        spec = our_spec(ike, esp, certs=ours)
        if aggressive:
            spec["phase1"] = "aggressive"
        if transport:
            spec["mode"] = "transport"
            spec["local_ts"], spec["remote_ts"] = [f"{OUR_ADDR}/32"], [f"{CHARON_ADDR}/32"]
        spec.update(extra)
        self.ours = V1Peer(self.our_ns, self.dir, spec)
        return self.ours

    def establish(self, *, charon_initiates: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        assert self.ours is not None
        if charon_initiates:
            self.charon.swanctl(
                "--initiate", "--ike", "net-ike", "--child", "net", "--timeout", "10"
            )
        else:
            self.ours.command("initiate")
        try:
            ike = self.ours.wait("IkeSaEstablished", timeout=15)
            child = self.ours.wait("ChildSaEstablished", timeout=15)
        except AssertionError:
            raise AssertionError(self.charon.log_text()[-6000:]) from None
        # Our side is done when it sends Quick mode message 3; charon installs (and
        # logs its keys) once that arrives.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sas = self.charon.list_sas()
            children = [c for sa in sas for c in sa.get("child-sas", {}).values()]
            if any(c.get("state") == "INSTALLED" for c in children):
                break
            time.sleep(0.05)
        return ike, child


@pytest.fixture
def lab() -> Iterator[Lab]:
    # Level 4 makes charon print the keys it derives (test_keymat_matches_charons_log).
    with interop_setup(log_level=4, aggressive_psk=True) as (topology, charon, directory):
        built = Lab(charon, topology.our_ns, directory)
        try:
            yield built
        finally:
            if built.ours is not None:
                built.ours.close()


def _charon_sa(charon: Charon) -> tuple[dict[str, Any], dict[str, Any]]:
    (ike,) = [sa for sa in charon.list_sas() if sa.get("state") == "ESTABLISHED"]
    children = [c for c in ike.get("child-sas", {}).values() if c.get("state") == "INSTALLED"]
    assert len(children) == 1, ike
    return ike, children[0]


def _check(lab: Lab, ours_ike: dict[str, Any], ours_child: dict[str, Any]) -> None:
    ike, child = _charon_sa(lab.charon)
    assert ike["version"] == "1"
    assert (ike["initiator-spi"], ike["responder-spi"]) == (ours_ike["spi_i"], ours_ike["spi_r"])
    assert ike["encr-alg"] == "AES_CBC" and ike["encr-keysize"] == "256"
    assert ike["integ-alg"] == "HMAC_SHA2_256_128" and ike["dh-group"] == "MODP_2048"
    assert ike["local-id"] == CHARON_ID and ike["remote-id"] == OUR_ID
    assert ours_ike["remote_id"] == CHARON_ID
    # kernel-libipsec claims a NAT: IKE floated to 4500 and ESP goes in UDP.
    assert ike["remote-port"] == "4500" and ike.get("nat-any") == "yes"
    assert child["encap"] == "yes" and ours_child["encap"] is True
    assert child["mode"] == "TUNNEL" and child["protocol"] == "ESP"
    assert (child["spi-in"], child["spi-out"]) == (ours_child["spi_out"], ours_child["spi_in"])
    assert child["local-ts"] == [CHARON_NET] and child["remote-ts"] == [OUR_NET]


@pytest.mark.parametrize("charon_initiates", [False, True], ids=["we-initiate", "charon-initiates"])
def test_main_mode_psk_and_quick_mode(lab: Lab, charon_initiates: bool) -> None:
    lab.load(IKE, ESP, charon_initiates=charon_initiates)
    ours_ike, ours_child = lab.establish(charon_initiates=charon_initiates)
    _check(lab, ours_ike, ours_child)
    _, child = _charon_sa(lab.charon)
    assert child["encr-alg"] == "AES_CBC" and child["integ-alg"] == "HMAC_SHA2_256_128"
    assert ours_child["encr_id"] == 12 and ours_child["integ_id"] == 12


def test_quick_mode_with_pfs(lab: Lab) -> None:
    lab.load(IKE, "aes256gcm16-ecp256", charon_initiates=False)
    ours_ike, ours_child = lab.establish(charon_initiates=False)
    _check(lab, ours_ike, ours_child)
    _, child = _charon_sa(lab.charon)
    assert child["encr-alg"] == "AES_GCM_16" and child["dh-group"] == "ECP_256"
    assert ours_child["encr_id"] == 20 and ours_child["proposal"] == "aes256gcm16-ecp256"


def test_delete_and_dpd(lab: Lab) -> None:
    peer = lab.load(IKE, ESP, charon_initiates=False)
    lab.establish(charon_initiates=False)
    peer.command("liveness")
    peer.wait("LivenessAnswered", timeout=10)
    peer.command("delete_child")
    peer.wait("ChildSaDeleted", timeout=5)
    peer.command("delete_ike")
    peer.wait("IkeSaDeleted", timeout=5)
    for _ in range(50):
        if not lab.charon.list_sas():
            break
        time.sleep(0.1)
    assert lab.charon.list_sas() == []


@pytest.mark.parametrize("charon_initiates", [False, True], ids=["we-initiate", "charon-initiates"])
def test_aggressive_mode_psk(lab: Lab, charon_initiates: bool) -> None:
    """Aggressive mode with a pre-shared key and FQDN identities (RFC 2409 section
    5.4), each side initiating. charon answers it only with
    i_dont_care_about_security_and_use_aggressive_mode_psk in its strongswan.conf,
    which this module's charon has."""
    lab.load(IKE, ESP, charon_initiates=charon_initiates, aggressive=True)
    ours_ike, ours_child = lab.establish(charon_initiates=charon_initiates)
    _check(lab, ours_ike, ours_child)
    ike, _ = _charon_sa(lab.charon)
    assert ike.get("initiator", "no") == ("yes" if charon_initiates else "no")
    assert "AGGRESSIVE request 0 [ SA KE No ID" in lab.charon.log_text()


@pytest.mark.parametrize("charon_initiates", [False, True], ids=["we-initiate", "charon-initiates"])
def test_ecdsa_certificates(lab: Lab, charon_initiates: bool) -> None:
    """Main mode with ECDSA-256 signatures (RFC 4754) and a CA-issued certificate each."""
    certs = _certificates(lab.dir, "ecdsa")
    lab.load(IKE, ESP, charon_initiates=charon_initiates, certs=certs)
    ours_ike, ours_child = lab.establish(charon_initiates=charon_initiates)
    _check(lab, ours_ike, ours_child)
    log = lab.charon.log_text()
    assert "authentication of 'ours.example' with ECDSA_WITH_NULL successful" in log


@pytest.mark.parametrize("aggressive", [False, True], ids=["main", "aggressive"])
@pytest.mark.parametrize("charon_initiates", [False, True], ids=["we-initiate", "charon-initiates"])
def test_rsa_certificates(lab: Lab, charon_initiates: bool, aggressive: bool) -> None:
    """RSA signatures (RFC 2409 section 5.1, RSA_SIG) with 2048-bit keys and a CA-issued
    certificate each: our SIG is PKCS #1 v1.5 over the bare HASH_I / HASH_R, made by
    OpenSSL (agent/ike/rsa_raw.py), which charon verifies as RSA_EMSA_PKCS1_NULL; we
    verify its own the same way."""
    certs = _certificates(lab.dir, "rsa")
    lab.load(IKE, ESP, charon_initiates=charon_initiates, certs=certs, aggressive=aggressive)
    ours_ike, ours_child = lab.establish(charon_initiates=charon_initiates)
    _check(lab, ours_ike, ours_child)
    log = lab.charon.log_text()
    assert "authentication of 'ours.example' with RSA_EMSA_PKCS1_NULL successful" in log
    assert ("AGGRESSIVE" in log) is aggressive


@pytest.mark.parametrize("charon_initiates", [False, True], ids=["we-initiate", "charon-initiates"])
def test_nat_oa_in_transport_mode(lab: Lab, charon_initiates: bool) -> None:
    """UDP-encapsulated transport mode (kernel-libipsec claims a NAT): NAT-OAi and
    NAT-OAr go both ways in Quick mode (RFC 3947 section 5.2). kernel-libipsec cannot
    install a transport-mode SA ("failed to create SAD entry"), so only the exchange
    is checked: charon parses ours, and our initiator keeps charon's NAT-OAr (its own
    address: nothing translates here)."""
    peer = lab.load(IKE, ESP, charon_initiates=charon_initiates, transport=True)
    if charon_initiates:
        run(
            SWANCTL, "--initiate", "--ike", "net-ike", "--child", "net", "--timeout", "5",
            "--uri", lab.charon.uri, check=False,
        )  # fmt: skip
    else:
        peer.command("initiate")
        child = peer.wait("ChildSaEstablished", timeout=15)
        assert child["mode"] == "transport" and child["encap"] is True
        assert child["peer_original"] == CHARON_ADDR
    deadline = time.monotonic() + 10
    parsed = "parsed QUICK_MODE response" if charon_initiates else "parsed QUICK_MODE request"
    while time.monotonic() < deadline:
        log = lab.charon.log_text()
        if any(parsed in line and "NAT-OA NAT-OA" in line for line in log.splitlines()):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(lab.charon.log_text()[-4000:])
    assert "NAT-OA NAT-OA ]" in log


def test_kilobyte_lifetime_offered_to_charon(lab: Lab) -> None:
    """Quick mode offers seconds and kilobytes (two Life Type/Life Duration pairs, RFC
    2407 section 4.5); charon takes the offer."""
    lab.load(IKE, ESP, charon_initiates=False, child_lifetime_kb=1000)
    _, child = lab.establish(charon_initiates=False)
    assert child["lifetime"] == {"seconds": 3600, "kilobytes": 1000}
    _charon_sa(lab.charon)  # installed (charon logs only the seconds it received)
    assert "received 3600s lifetime" in lab.charon.log_text()


def test_responder_lifetime_to_charon(lab: Lab) -> None:
    """charon proposes a phase 1 lifetime longer than ours; our responder keeps its own
    and says so in RESPONDER-LIFETIME (RFC 2407 section 4.6.3.1), which charon takes
    without complaint."""
    lab.load(IKE, ESP, charon_initiates=True, reauth_time="20000")
    ours_ike, ours_child = lab.establish(charon_initiates=True)
    _check(lab, ours_ike, ours_child)
    log = lab.charon.log_text()
    assert "parsed INFORMATIONAL_V1 request" in log and "[ HASH N((24576)) ]" in log
    assert "processing failed" not in log


@pytest.mark.parametrize("charon_initiates", [False, True], ids=["we-initiate", "charon-initiates"])
def test_ecdsa_aggressive_mode(lab: Lab, charon_initiates: bool) -> None:
    """Aggressive mode with ECDSA-256 signatures (RFC 2409 section 5.1, RFC 4754): our
    CERTREQ names the CA, so charon sends its certificate (send_cert = ifasked)."""
    certs = _certificates(lab.dir, "ecdsa")
    lab.load(IKE, ESP, charon_initiates=charon_initiates, certs=certs, aggressive=True)
    ours_ike, ours_child = lab.establish(charon_initiates=charon_initiates)
    _check(lab, ours_ike, ours_child)
    log = lab.charon.log_text()
    assert "authentication of 'ours.example' with ECDSA_WITH_NULL successful" in log
    assert "AGGRESSIVE request 0 [ SA KE No ID" in log or "AGGRESSIVE response 0" in log
    assert "received cert request for" in log


@pytest.mark.parametrize("esp", [ESP, "aes256gcm16-modp2048"])
def test_keymat_matches_charons_log(lab: Lab, esp: str) -> None:
    """KEYMAT per direction (RFC 2409 section 5.5, with g(qm)^xy under PFS) is the same
    bytes charon derives; we initiate, so our outbound keys are its "initiator" ones."""
    lab.load(IKE, esp, charon_initiates=False)
    _, child = lab.establish(charon_initiates=False)
    logged = charon_secrets(lab.charon.log_text())
    assert logged["encryption initiator key"] == [bytes.fromhex(child["encr_key_out"])]
    assert logged["encryption responder key"] == [bytes.fromhex(child["encr_key_in"])]
    if esp == ESP:
        assert logged["integrity initiator key"] == [bytes.fromhex(child["integ_key_out"])]
        assert logged["integrity responder key"] == [bytes.fromhex(child["integ_key_in"])]


def test_charon_deletes_and_checks_liveness(lab: Lab) -> None:
    """charon's Delete for the Quick mode SA names its inbound SPI, our outbound one
    (RFC 2408 section 3.15); its R-U-THERE gets our ACK (RFC 3706); its Delete of the
    ISAKMP SA ends ours."""
    peer = lab.load(IKE, ESP, charon_initiates=False, dpd_delay="1")
    _, child = lab.establish(charon_initiates=False)
    time.sleep(2.5)  # charon checks a quiet peer every second
    assert "parsed INFORMATIONAL_V1 request" in lab.charon.log_text()
    assert "[ HASH N(DPD_ACK) ]" in lab.charon.log_text()
    lab.charon.swanctl("--terminate", "--child", "net", "--timeout", "5")
    deleted = peer.wait("ChildSaDeleted", timeout=5)
    assert deleted["reason"] == "deleted by peer"
    assert (deleted["spi_in"], deleted["spi_out"]) == (child["spi_in"], child["spi_out"])
    lab.charon.swanctl("--terminate", "--ike", "net-ike", "--timeout", "5")
    assert peer.wait("IkeSaDeleted", timeout=5)["reason"] == "deleted by peer"


@pytest.mark.parametrize("charon_initiates", [False, True], ids=["we-initiate", "charon-initiates"])
def test_wrong_psk_fails_clearly(lab: Lab, charon_initiates: bool) -> None:
    """Different pre-shared keys: message 5 does not verify at the responder; each side
    fails naming AUTHENTICATION_FAILED (charon's in-the-clear notify, or our own check)."""
    peer = lab.load(
        IKE,
        ESP,
        charon_initiates=charon_initiates,
        our_psk="not the key charon has",
        retransmit_tries=1,
        half_open_timeout=4.0,
    )
    if charon_initiates:
        # charon's initiate fails (as it should): its exit status is not ours to check.
        run(
            SWANCTL,
            "--initiate",
            "--ike",
            "net-ike",
            "--timeout",
            "3",
            "--uri",
            lab.charon.uri,
            check=False,
        )
    else:
        peer.command("initiate")
    failed = peer.wait("IkeSaFailed", timeout=15)
    assert failed["notify"] == 24  # AUTHENTICATION_FAILED
    assert "pre-shared keys" in failed["reason"]
    assert not [sa for sa in lab.charon.list_sas() if sa.get("state") == "ESTABLISHED"]


@pytest.mark.parametrize("by", ["us", "charon"])
def test_child_rekey(lab: Lab, by: str) -> None:
    """A new Quick mode replaces the child (make-before-break). We delete the old SA at
    once; charon 5.9 keeps an SA it rekeyed (state REKEYED) until it expires, so then
    only the new one is compared."""
    peer = lab.load(IKE, ESP, charon_initiates=False)
    _, old = lab.establish(charon_initiates=False)
    if by == "us":
        peer.command("rekey_child")
    else:
        lab.charon.swanctl("--rekey", "--child", "net")
    rekeyed = peer.wait("ChildSaRekeyed", timeout=10)
    assert rekeyed["initiator"] is (by == "us")
    assert rekeyed["old_spi_in"] == old["spi_in"]
    new = rekeyed["new"]
    if by == "us":
        deleted = peer.wait("ChildSaDeleted", timeout=10)
        assert (deleted["spi_in"], deleted["reason"]) == (old["spi_in"], "rekeyed")
    installed: list[tuple[str, str]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        (ike,) = lab.charon.list_sas()
        installed = [
            (c["spi-in"], c["spi-out"])
            for c in ike.get("child-sas", {}).values()
            if c.get("state") == "INSTALLED"
        ]
        if installed == [(new["spi_out"], new["spi_in"])]:
            break
        time.sleep(0.1)
    assert installed == [(new["spi_out"], new["spi_in"])]
