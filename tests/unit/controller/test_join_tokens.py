"""Join tokens on the controller: their text, their store, the per-source rate limit and
the refusals of JoinAuthority, on a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vpnfleet.controller.deploy.join import (
    JoinAuthority,
    JoinError,
    JoinRefused,
    Refusal,
    SourceRateLimit,
    TokenState,
    TokenStore,
    parse_ttl,
)
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.audit import AuditLog
from vpnfleet.protos.join_token import JoinToken, TokenFormatError


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def csr(host: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    pki.init_ca(tmp_path / "state")
    return tmp_path / "state"


def test_token_text_round_trips_and_hides_its_secret() -> None:
    token = JoinToken.new("ab" * 32)
    assert JoinToken.parse(f" {token}\n") == token
    assert token.secret not in repr(token)
    for bad in ("", "vfj1.x.y.z", str(token)[:-1], str(token).replace("vfj1", "vfj2")):
        with pytest.raises(TokenFormatError, match="as `vpnfleet token create` prints it"):
            JoinToken.parse(bad)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("7d", 604800)]
)
def test_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["1", "1w", "-1h", "0m", "8d", "1.5h"])
def test_bad_ttl(text: str) -> None:
    with pytest.raises(JoinError, match="TTL"):
        parse_ttl(text)


def test_store_keeps_a_hash_and_states_follow_the_clock(state: Path) -> None:
    clock = FakeClock()
    store = TokenStore(state, clock)
    token = store.create("a1", 60, "ab" * 32)
    assert token.secret not in (state / "join-tokens.json").read_text()
    [record] = store.list()
    assert record.state(clock.now + 59) is TokenState.VALID
    assert record.state(clock.now + 60) is TokenState.EXPIRED
    assert "secret_sha256" not in record.to_json(clock.now)
    assert store.revoke(token.token_id).state(clock.now) is TokenState.REVOKED
    with pytest.raises(JoinError, match="no token 'ffff'"):
        store.revoke("ffff")
    with pytest.raises(pki.PkiError, match="controller's name"):
        store.create("VPNFLEET-controller", 60, "ab" * 32)


def test_unreadable_store_is_named(state: Path) -> None:
    (state / "join-tokens.json").write_text("{not json")
    with pytest.raises(JoinError, match=r"join-tokens\.json cannot be read"):
        TokenStore(state).list()


def test_rate_limit_per_source_refills_with_time() -> None:
    clock = FakeClock(0.0)
    limit = SourceRateLimit(burst=2, interval=10.0, clock=clock)
    assert [limit.allow("192.0.2.1") for _ in range(3)] == [True, True, False]
    assert limit.allow("192.0.2.2")
    clock.now = 9.9
    assert not limit.allow("192.0.2.1")
    clock.now = 30.0
    assert limit.allow("192.0.2.1")


def test_rate_limited_before_the_token_is_looked_at_and_audited(state: Path) -> None:
    clock = FakeClock()
    authority = JoinAuthority(state, clock, SourceRateLimit(burst=1, interval=60.0, clock=clock))
    token = authority.tokens.create("a1", 600, "ab" * 32)
    with pytest.raises(JoinRefused) as first:
        authority.join("192.0.2.9", token.token_id, "A" * 32, "a1", b"", b"")
    assert first.value.refusal is Refusal.WRONG_SECRET
    with pytest.raises(JoinRefused) as second:
        authority.join("192.0.2.9", token.token_id, token.secret, "a1", csr("a1"), csr("a1"))
    assert second.value.refusal is Refusal.RATE_LIMITED
    grant = authority.join("192.0.2.10", token.token_id, token.secret, "a1", csr("a1"), csr("a1"))
    assert grant.host == "a1"
    rows = [(e.outcome, e.errors[:1]) for e in reversed(AuditLog.in_state(state).recent())]
    assert [(o, [x.split(":")[0] for x in err]) for o, err in rows] == [
        ("refused", ["wrong-secret"]),
        ("refused", ["rate-limited"]),
        ("changed", []),
    ]


def test_csrs_of_another_host_are_refused_and_the_token_kept(state: Path) -> None:
    clock = FakeClock()
    authority = JoinAuthority(state, clock)
    token = authority.tokens.create("a1", 600, "ab" * 32, address="192.0.2.1")
    with pytest.raises(JoinRefused, match="CSR names b1, not 'a1'") as refused:
        authority.join("192.0.2.9", token.token_id, token.secret, "a1", csr("b1"), csr("a1"))
    assert refused.value.refusal is Refusal.BAD_CSR
    [record] = authority.tokens.list()
    assert record.state(clock.now) is TokenState.VALID
    grant = authority.join("192.0.2.9", token.token_id, token.secret, "a1", csr("a1"), csr("a1"))
    ike = x509.load_pem_x509_certificate(grant.ike_cert)
    san = ike.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]
    [record] = authority.tokens.list()
    assert (record.state(clock.now), record.used_by) == (TokenState.USED, "192.0.2.9")


def test_ipv6_sources_are_counted_by_their_64() -> None:
    limit = SourceRateLimit(burst=1, interval=60.0, clock=FakeClock(0.0))
    assert limit.allow("2001:db8:1:2::1")
    assert not limit.allow("2001:db8:1:2:ffff::9")  # the same /64
    assert limit.allow("2001:db8:1:3::1")


def test_what_the_audit_keeps_of_a_request_is_bounded(state: Path) -> None:
    authority = JoinAuthority(state, FakeClock())
    with pytest.raises(JoinRefused) as refused:
        authority.join("192.0.2.9", "x" * 5000, "y", "h" * 5000, b"", b"")
    assert refused.value.refusal is Refusal.MALFORMED
    [entry] = AuditLog.in_state(state).recent()
    assert entry.revision == "" and len(entry.hosts[0]) == 254
