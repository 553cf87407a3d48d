"""Credential rotation on the agent's side without the network: staging key pairs, the
checks InstallCredentials makes (each refusal changes nothing on disk), the atomic swap
with its redo journal, and recovery after a crash at each step."""

from __future__ import annotations

import datetime
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vpnfleet.agent import enroll
from vpnfleet.agent.enroll import (
    CredentialFiles,
    CredentialPrecondition,
    CredentialRefused,
    check_install,
    commit_install,
    current_fingerprints,
    fingerprint,
    init_agent,
    parse_ca_bundle,
    prepare_enrollment,
    recover_credentials,
    staged,
)

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
Key = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return pem(self.cert)

    @classmethod
    def make(cls, name: str, ca: bool = True) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def issue(
        self,
        public_key: object,
        host: str,
        *,
        days: int = 30,
        usages: tuple[x509.ObjectIdentifier, ...] = (
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        start: datetime.datetime = NOW - datetime.timedelta(minutes=5),
    ) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        return pem(builder.sign(self.key, hashes.SHA256()))

    def sign_csr(self, csr_pem: bytes, **kwargs: object) -> bytes:
        csr = x509.load_pem_x509_csr(csr_pem)
        host = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return self.issue(csr.public_key(), str(host), **kwargs)  # type: ignore[arg-type]


@dataclass
class Agent:
    files: CredentialFiles
    old_ca: Ca
    new_ca: Ca

    def snapshot(self) -> dict[str, bytes]:
        """Every file of the state dir with its content (and mode)."""
        out = {}
        for path in sorted(self.files.state_dir.iterdir()):
            mode = stat.S_IMODE(path.stat().st_mode)
            out[path.name] = path.read_bytes() + f"|{mode:o}".encode()
        return out

    def prepare(self, key_type: str = "") -> tuple[bytes, bytes]:
        return prepare_enrollment(self.files, "a1", True, True, key_type)

    def check(
        self,
        tls: bytes = b"",
        ike: bytes = b"",
        bundle: bytes = b"",
        caller: bytes | None = None,
    ) -> enroll.CredentialChange:
        return check_install(self.files, "a1", tls, ike, bundle, caller, now=NOW)

    def install(self, tls: bytes = b"", ike: bytes = b"", bundle: bytes = b"") -> None:
        commit_install(self.files, self.check(tls, ike, bundle))


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    """a1 enrolled with the old CA; a new CA ready to take over."""
    state = tmp_path / "a1"
    init_agent(state, "a1")
    old, new = Ca.make("old CA"), Ca.make("new CA")
    (state / "tls.pem").write_bytes(old.sign_csr((state / "tls.csr").read_bytes()))
    (state / "ike.pem").write_bytes(old.sign_csr((state / "ike.csr").read_bytes(), usages=()))
    (state / "ca.pem").write_bytes(old.pem)
    return Agent(CredentialFiles.in_state_dir(state), old, new)


def spki(key_or_cert: Key | x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return key_or_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_at(path: Path) -> Key:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, Key)
    return key


# -- PrepareEnrollment -------------------------------------------------------------------


def test_prepare_stages_keys_beside_the_ones_in_use(agent: Agent) -> None:
    files = agent.files
    before = {p: p.read_bytes() for p in files.targets}
    tls_csr, ike_csr = agent.prepare()
    assert {p: p.read_bytes() for p in files.targets} == before  # nothing in use changed
    for key_path, csr_pem in ((files.tls_key, tls_csr), (files.ike_key, ike_csr)):
        next_key = staged(key_path)
        assert stat.S_IMODE(next_key.stat().st_mode) == 0o600
        csr = x509.load_pem_x509_csr(csr_pem)
        assert csr.is_signature_valid
        assert spki(csr) == spki(key_at(next_key))
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "a1"
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["a1"]
    # The private keys stay on the host: neither request carries one.
    assert b"PRIVATE KEY" not in tls_csr + ike_csr


def test_prepare_only_what_is_asked_and_again_replaces(agent: Agent) -> None:
    tls_csr, ike_csr = prepare_enrollment(agent.files, "a1", False, True)
    assert tls_csr == b"" and ike_csr
    assert not staged(agent.files.tls_key).exists()
    first = staged(agent.files.ike_key).read_bytes()
    prepare_enrollment(agent.files, "a1", False, True)
    assert staged(agent.files.ike_key).read_bytes() != first


def test_prepare_key_types(agent: Agent) -> None:
    agent.prepare("ed25519")
    # The IKE key follows key_type; the TLS key stays P-256 (gRPC's TLS has no Ed25519).
    assert isinstance(key_at(staged(agent.files.ike_key)), ed25519.Ed25519PrivateKey)
    tls_key = key_at(staged(agent.files.tls_key))
    assert isinstance(tls_key, ec.EllipticCurvePrivateKey)
    assert isinstance(tls_key.curve, ec.SECP256R1)
    agent.prepare()
    assert isinstance(key_at(staged(agent.files.ike_key)), ec.EllipticCurvePrivateKey)


def test_prepare_refuses_bad_requests(agent: Agent) -> None:
    before = agent.snapshot()
    with pytest.raises(CredentialRefused, match="unknown key type 'rsa-2048'; choose one of"):
        agent.prepare("rsa-2048")
    with pytest.raises(CredentialRefused, match="nothing to prepare"):
        prepare_enrollment(agent.files, "a1", False, False)
    assert agent.snapshot() == before


# -- InstallCredentials: the swap ----------------------------------------------------------


def test_install_promotes_staged_keys_with_their_certificates(agent: Agent) -> None:
    files = agent.files
    tls_csr, ike_csr = agent.prepare()
    tls_new, ike_new = agent.new_ca.sign_csr(tls_csr), agent.new_ca.sign_csr(ike_csr, usages=())
    staged_tls = staged(files.tls_key).read_bytes()
    bundle = agent.old_ca.pem + agent.new_ca.pem
    change = agent.check(tls_new, ike_new, bundle)
    assert change.tls_changed and change.ike_pem == (ike_new, staged(files.ike_key).read_bytes())
    commit_install(files, change)
    assert files.tls_key.read_bytes() == staged_tls
    assert (files.tls_cert.read_bytes(), files.ike_cert.read_bytes()) == (tls_new, ike_new)
    assert files.ca.read_bytes() == bundle
    assert not staged(files.tls_key).exists() and not staged(files.ike_key).exists()
    assert not files.journal.exists()
    assert stat.S_IMODE(files.tls_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.ike_key.stat().st_mode) == 0o600
    assert spki(key_at(files.ike_key)) == spki(x509.load_pem_x509_certificate(ike_new))
    tls_fp, ike_fp, ca_fps = current_fingerprints(files)
    assert tls_fp == fingerprint(x509.load_pem_x509_certificate(tls_new))
    assert ike_fp == fingerprint(x509.load_pem_x509_certificate(ike_new))
    assert ca_fps == [fingerprint(agent.old_ca.cert), fingerprint(agent.new_ca.cert)]
    assert sorted(p.name for p in files.state_dir.iterdir()) == [
        "ca.pem",
        "ike.csr",
        "ike.key",
        "ike.pem",
        "tls.csr",
        "tls.key",
        "tls.pem",
    ]


def test_same_install_twice_changes_nothing(agent: Agent) -> None:
    tls_csr, ike_csr = agent.prepare()
    tls_new, ike_new = agent.new_ca.sign_csr(tls_csr), agent.new_ca.sign_csr(ike_csr)
    bundle = agent.old_ca.pem + agent.new_ca.pem
    agent.install(tls_new, ike_new, bundle)
    before = agent.snapshot()
    again = agent.check(tls_new, ike_new, bundle)
    assert again.empty and not again.tls_changed and again.ike_pem is None
    commit_install(agent.files, again)
    # The same bundle in another order is the same trust.
    assert agent.check(b"", b"", agent.new_ca.pem + agent.old_ca.pem).empty
    assert agent.snapshot() == before


def test_bundle_alone_changes_only_the_trust(agent: Agent) -> None:
    before = agent.snapshot()
    change = agent.check(bundle=agent.old_ca.pem + agent.new_ca.pem)
    assert change.tls_changed and change.ike_pem is None and not change.promotions
    commit_install(agent.files, change)
    after = agent.snapshot()
    assert {k for k in after if after[k] != before.get(k)} == {"ca.pem"}


def test_reissued_certificate_for_the_key_in_use(agent: Agent) -> None:
    """A certificate for the key already in use (no PrepareEnrollment) replaces only
    the certificate: a CA rotation may re-sign the keys a host has."""
    current = key_at(agent.files.ike_key)
    reissued = agent.new_ca.issue(current.public_key(), "a1", usages=())
    bundle = agent.old_ca.pem + agent.new_ca.pem
    change = agent.check(ike=reissued, bundle=bundle)
    assert not change.promotions and change.ike_pem is not None
    commit_install(agent.files, change)
    assert agent.files.ike_cert.read_bytes() == reissued


# -- InstallCredentials: refusals change nothing -------------------------------------------


@pytest.fixture
def prepared(agent: Agent) -> tuple[Agent, bytes, bytes]:
    tls_csr, ike_csr = agent.prepare()
    return agent, tls_csr, ike_csr


def refused(agent: Agent, error: type[Exception], match: str, **request: bytes) -> None:
    before = agent.snapshot()
    with pytest.raises(error, match=match):
        agent.check(**request)
    assert agent.snapshot() == before


def test_certificate_for_another_key(prepared: tuple[Agent, bytes, bytes]) -> None:
    agent, tls_csr, _ = prepared
    other = ec.generate_private_key(ec.SECP256R1())
    bundle = agent.new_ca.pem
    wrong = agent.new_ca.issue(other.public_key(), "a1")
    refused(
        agent,
        CredentialRefused,
        "TLS certificate is not for the staged TLS key",
        tls=wrong,
        bundle=bundle,
    )
    # The TLS request signed as the IKE certificate: right host, wrong key.
    swapped = agent.new_ca.sign_csr(tls_csr)
    refused(
        agent,
        CredentialRefused,
        "IKE certificate is not for the staged IKE key",
        ike=swapped,
        bundle=bundle,
    )


def test_certificate_from_a_ca_outside_the_bundle(prepared: tuple[Agent, bytes, bytes]) -> None:
    agent, tls_csr, _ = prepared
    stranger = Ca.make("stranger CA")
    tls = stranger.sign_csr(tls_csr)
    refused(
        agent,
        CredentialRefused,
        r"TLS certificate \(issuer CN=stranger CA\) was not issued by a CA of the bundle",
        tls=tls,
        bundle=agent.new_ca.pem,
    )
    # Without a bundle the one in use (the old CA only) is the trust.
    new = agent.new_ca.sign_csr(tls_csr)
    refused(agent, CredentialRefused, r"not issued by a CA of the bundle \(1 CAs\)", tls=new)


def test_garbage_pem(prepared: tuple[Agent, bytes, bytes]) -> None:
    agent, _, _ = prepared
    refused(agent, CredentialRefused, "CA bundle holds no PEM certificate", bundle=b"junk")
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    refused(
        agent,
        CredentialRefused,
        "CA bundle: certificate 2 does not parse",
        bundle=agent.new_ca.pem + broken,
    )
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    refused(
        agent,
        CredentialRefused,
        "block 2 is a PRIVATE KEY, not a CERTIFICATE",
        bundle=agent.new_ca.pem + key,
    )
    refused(agent, CredentialRefused, "TLS certificate is not a PEM certificate", tls=b"junk")
    refused(agent, CredentialRefused, "IKE certificate is not a PEM certificate", ike=broken)


def test_non_ca_in_the_bundle(prepared: tuple[Agent, bytes, bytes]) -> None:
    agent, tls_csr, _ = prepared
    leaf = agent.new_ca.sign_csr(tls_csr)
    refused(
        agent,
        CredentialRefused,
        r"CA bundle: certificate 2 \(CN=a1\) is not a CA",
        bundle=agent.new_ca.pem + leaf,
    )
    not_ca = Ca.make("pretender", ca=False)
    refused(agent, CredentialRefused, "certificate 1 .* is not a CA", bundle=not_ca.pem)


def test_nothing_staged(agent: Agent) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    tls = agent.old_ca.issue(other.public_key(), "a1")
    refused(
        agent,
        CredentialPrecondition,
        "no TLS key is staged .* call PrepareEnrollment with tls first",
        tls=tls,
    )
    ike = agent.old_ca.issue(other.public_key(), "a1")
    refused(agent, CredentialPrecondition, "no IKE key is staged", ike=ike)


def test_wrong_host_expired_and_not_yet_valid(prepared: tuple[Agent, bytes, bytes]) -> None:
    agent, _, _ = prepared
    staged_tls = key_at(staged(agent.files.tls_key)).public_key()
    b1 = agent.new_ca.issue(staged_tls, "b1")
    refused(
        agent,
        CredentialRefused,
        "TLS certificate names b1, not this host 'a1'",
        tls=b1,
        bundle=agent.new_ca.pem,
    )
    old = agent.new_ca.issue(staged_tls, "a1", start=NOW - datetime.timedelta(days=40))
    refused(
        agent, CredentialRefused, "TLS certificate expired at", tls=old, bundle=agent.new_ca.pem
    )
    future = agent.new_ca.issue(staged_tls, "a1", start=NOW + datetime.timedelta(hours=1))
    refused(agent, CredentialRefused, "is not valid before", tls=future, bundle=agent.new_ca.pem)
    # Within the allowed clock skew it is fine.
    soon = agent.new_ca.issue(staged_tls, "a1", start=NOW + datetime.timedelta(minutes=2))
    assert agent.check(tls=soon, bundle=agent.new_ca.pem).promotions


def test_tls_certificate_without_server_auth(prepared: tuple[Agent, bytes, bytes]) -> None:
    agent, tls_csr, _ = prepared
    client_only = agent.new_ca.sign_csr(tls_csr, usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    refused(
        agent,
        CredentialRefused,
        "does not allow serverAuth",
        tls=client_only,
        bundle=agent.new_ca.pem,
    )


def test_bundle_that_would_lock_the_caller_out(agent: Agent) -> None:
    controller_key = ec.generate_private_key(ec.SECP256R1())
    old_controller = agent.old_ca.issue(controller_key.public_key(), "vpnfleet-controller")
    new_controller = agent.new_ca.issue(controller_key.public_key(), "vpnfleet-controller")
    refused(
        agent,
        CredentialPrecondition,
        r"does not hold the CA of the caller's own certificate \(issuer CN=old CA\)",
        bundle=agent.new_ca.pem,
        caller=old_controller,
    )
    # Both CAs while the controller still has the old certificate; the new only after
    # it has switched.
    assert not agent.check(bundle=agent.old_ca.pem + agent.new_ca.pem, caller=old_controller).empty
    assert not agent.check(bundle=agent.new_ca.pem, caller=new_controller).empty


def test_parse_ca_bundle_ignores_text_between_blocks(agent: Agent) -> None:
    bundle = b"subject=CN=old CA\n" + agent.old_ca.pem + b"\n# next\n" + agent.new_ca.pem
    assert [c.subject for c in parse_ca_bundle(bundle)] == [
        agent.old_ca.cert.subject,
        agent.new_ca.cert.subject,
    ]


# -- crashes -----------------------------------------------------------------------------


def _full_change(agent: Agent) -> tuple[enroll.CredentialChange, dict[str, bytes]]:
    tls_csr, ike_csr = agent.prepare()
    tls, ike = agent.new_ca.sign_csr(tls_csr), agent.new_ca.sign_csr(ike_csr)
    bundle = agent.old_ca.pem + agent.new_ca.pem
    expected = {
        "tls.key": staged(agent.files.tls_key).read_bytes(),
        "ike.key": staged(agent.files.ike_key).read_bytes(),
        "tls.pem": tls,
        "ike.pem": ike,
        "ca.pem": bundle,
    }
    return agent.check(tls, ike, bundle), expected


def in_use(agent: Agent) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in agent.files.targets}


def test_crash_before_the_journal_keeps_the_old_set(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = in_use(agent)
    change, _ = _full_change(agent)
    real_write = enroll.write_atomically

    def write(path: Path, data: bytes, mode: int = 0o600) -> None:
        if path.name == enroll.JOURNAL:
            raise KeyboardInterrupt("power cut")  # the process dies here
        real_write(path, data, mode)

    monkeypatch.setattr(enroll, "write_atomically", write)
    with pytest.raises(KeyboardInterrupt):
        commit_install(agent.files, change)
    monkeypatch.undo()
    assert any(p.name.endswith(".install") for p in agent.files.state_dir.iterdir())
    done = recover_credentials(agent.files)
    assert len(done) == 3 and all("did not commit" in line for line in done)
    assert in_use(agent) == old
    assert not any(p.name.endswith(".install") for p in agent.files.state_dir.iterdir())
    # The staged keys are still there: the same certificates can be installed again.
    assert staged(agent.files.tls_key).exists() and staged(agent.files.ike_key).exists()


@pytest.mark.parametrize("renames_done", [0, 1, 3, 5])
def test_crash_after_the_journal_finishes_the_new_set(
    agent: Agent, monkeypatch: pytest.MonkeyPatch, renames_done: int
) -> None:
    change, expected = _full_change(agent)
    real_replace = os.replace
    count = 0

    def replace(src: str | Path, dst: str | Path) -> None:
        nonlocal count
        if Path(dst).name in expected:
            if count == renames_done:
                raise KeyboardInterrupt("power cut")
            count += 1
        real_replace(src, dst)

    monkeypatch.setattr(enroll.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        commit_install(agent.files, change) if renames_done < 5 else _crash_at_end(agent, change)
    monkeypatch.undo()
    assert agent.files.journal.exists()
    assert recover_credentials(agent.files) == [
        "finished an interrupted credential install (5 files)"
    ]
    assert in_use(agent) == expected
    assert not agent.files.journal.exists()
    assert recover_credentials(agent.files) == []  # nothing left to do


def _crash_at_end(agent: Agent, change: enroll.CredentialChange) -> None:
    """Every rename done, the journal not yet removed."""
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name == enroll.JOURNAL:
            raise KeyboardInterrupt("power cut")
        real_unlink(self, missing_ok)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "unlink", unlink)
        commit_install(agent.files, change)


def test_unreadable_journal_is_set_aside(agent: Agent) -> None:
    old = in_use(agent)
    agent.files.journal.write_text("{not json")
    (problem,) = recover_credentials(agent.files)
    assert "is unreadable" in problem and "credentials.journal.corrupt" in problem
    assert in_use(agent) == old
    assert not agent.files.journal.exists()
