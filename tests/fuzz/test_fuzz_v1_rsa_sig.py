"""Property test of IKEv1 RSA_SIG verification (RFC 2409 section 5.1): whatever SIG a
peer sends (any length, any value, mutations of a good one), verify_signature answers
False and raises nothing, and only the unaltered signature of the hash verifies."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.ike.test_ike_rsa_raw import HASH, PKEYUTL_SIGNATURE, _key
from vpnfleet.agent.ike.v1 import auth
from vpnfleet.agent.ike.v1.constants import AuthMethod

PUBLIC = _key().public_key()


def test_the_good_signature_verifies() -> None:
    assert auth.verify_signature(PUBLIC, AuthMethod.RSA_SIG, HASH, PKEYUTL_SIGNATURE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_sig_is_refused(signature: bytes) -> None:
    assert not auth.verify_signature(PUBLIC, AuthMethod.RSA_SIG, HASH, signature)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(PKEYUTL_SIGNATURE) - 1), st.integers(1, 255))
def test_a_changed_octet_is_refused(at: int, xor: int) -> None:
    changed = bytearray(PKEYUTL_SIGNATURE)
    changed[at] ^= xor
    assert not auth.verify_signature(PUBLIC, AuthMethod.RSA_SIG, HASH, bytes(changed))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64).filter(lambda d: d != HASH))
def test_another_hash_is_refused(digest: bytes) -> None:
    assert not auth.verify_signature(PUBLIC, AuthMethod.RSA_SIG, digest, PKEYUTL_SIGNATURE)
