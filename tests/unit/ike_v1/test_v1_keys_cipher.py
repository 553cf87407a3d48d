"""The ISAKMP cipher's IV chains (RFC 2409 Appendix B), padding, refusals, and the key
helpers' refusals; the key record for Wireshark's ikev1_decryption_table.

Two IkeV1Cipher objects stand for the two ends of one ISAKMP SA: what one encrypts
the other must decrypt, on every chain, in any interleaving of message IDs, and a
datagram that is never confirmed must leave both ends in step.
"""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpnfleet.agent.ike.constants import EncrId
from vpnfleet.agent.ike.errors import CryptoError, LocalError, UnsupportedTransform
from vpnfleet.agent.ike.transforms import encr_for
from vpnfleet.agent.ike.v1 import keys
from vpnfleet.agent.ike.v1.cipher import MAX_CHAINS, IkeV1Cipher, pad
from vpnfleet.agent.ike.v1.constants import AuthMethod, P1Hash, ProtocolId
from vpnfleet.agent.ike.v1.export import ikev1_decryption_record, tshark_ikev1_options
from vpnfleet.agent.ike.v1.payloads import NoncePayload, encode_payloads, parse_payloads

AES128 = encr_for(EncrId.AES_CBC, 128)
AES256 = encr_for(EncrId.AES_CBC, 256)
KEY = bytes(range(16))
IV0 = bytes(range(100, 116))
QM = 0x1234ABCD
INFO = 0x0BADF00D


def pair() -> tuple[IkeV1Cipher, IkeV1Cipher]:
    return (IkeV1Cipher(AES128, KEY, "sha256", IV0), IkeV1Cipher(AES128, KEY, "sha256", IV0))


def deliver(sender: IkeV1Cipher, receiver: IkeV1Cipher, message_id: int, body: bytes) -> bytes:
    received = receiver.decrypt(message_id, sender.encrypt(message_id, body))
    receiver.confirm(received)
    return received.plaintext


def test_pad_adds_one_to_a_block_of_zeros() -> None:
    """Always at least one octet, so the last one is padding (cipher.py's note)."""
    assert pad(b"x" * 15, 16) == b"x" * 15 + b"\x00"
    assert pad(b"x" * 16, 16) == b"x" * 16 + bytes(16)
    assert pad(b"", 16) == bytes(16)


def test_phase1_chain_runs_on_the_last_block_of_each_message() -> None:
    """RFC 2409 Appendix B: the IV of a phase 1 message is the last ciphertext block of
    the one before, whichever end sent it."""
    initiator, responder = pair()
    first = initiator.encrypt(0, b"message five")
    assert first == AES128.encrypt(KEY, IV0, pad(b"message five", 16))
    assert initiator.iv(0) == first[-16:]
    responder.confirm(responder.decrypt(0, first))
    second = responder.encrypt(0, b"message six")
    assert second == AES128.encrypt(KEY, first[-16:], pad(b"message six", 16))
    assert initiator.decrypt(0, second).plaintext.startswith(b"message six")


def test_each_message_id_starts_its_own_chain_from_the_phase1_position() -> None:
    """RFC 2409 Appendix B: the first IV of an exchange is hash(last phase 1 block |
    M-ID), truncated to the block; chains of different M-IDs do not touch."""
    initiator, responder = pair()
    deliver(initiator, responder, 0, b"five")
    deliver(responder, initiator, 0, b"six")
    last = initiator.iv(0)
    expected = hashlib.sha256(last + QM.to_bytes(4, "big")).digest()[:16]
    assert initiator.iv(QM) == expected == keys.phase2_iv("sha256", last, QM)
    # Interleave a Quick Mode and an informational exchange.
    assert deliver(initiator, responder, QM, b"qm 1").startswith(b"qm 1")
    assert deliver(initiator, responder, INFO, b"delete").startswith(b"delete")
    assert deliver(responder, initiator, QM, b"qm 2").startswith(b"qm 2")
    assert deliver(initiator, responder, QM, b"qm 3").startswith(b"qm 3")
    assert initiator.iv(0) == responder.iv(0) == last
    for mid in (QM, INFO):
        assert initiator.iv(mid) == responder.iv(mid)


def test_an_unconfirmed_message_leaves_the_chain_as_it_was() -> None:
    """A datagram that decrypts to garbage (a wrong key, a forgery) or whose HASH fails
    is never confirmed: both ends stay in step for the next real message."""
    initiator, responder = pair()
    before = responder.iv(0)
    forged = responder.decrypt(0, bytes(32))
    assert responder.iv(0) == before
    del forged
    assert deliver(initiator, responder, 0, b"real").startswith(b"real")


def test_a_retransmission_is_resent_not_reencrypted() -> None:
    """Encrypting moves the chain, so a retransmission is the stored datagram. The
    receiver that confirmed the first copy cannot decrypt the second on its moved
    chain: it must recognise the bytes before decrypting (cipher.py's note)."""
    initiator, responder = pair()
    sent = initiator.encrypt(0, b"five")
    responder.confirm(responder.decrypt(0, sent))
    again = responder.decrypt(0, sent)
    assert not again.plaintext.startswith(b"five")
    assert initiator.encrypt(0, b"five") != sent


def test_confirm_refuses_a_chain_that_moved_since_decrypting() -> None:
    initiator, responder = pair()
    received = responder.decrypt(0, initiator.encrypt(0, b"five"))
    responder.encrypt(0, b"six")
    with pytest.raises(LocalError, match="IV chain of message ID 0 moved"):
        responder.confirm(received)


def test_the_oldest_phase2_chains_are_dropped_past_the_cap() -> None:
    initiator, responder = pair()
    for mid in range(1, MAX_CHAINS + 2):
        deliver(initiator, responder, mid, b"x")
    last = MAX_CHAINS + 1
    assert initiator.iv(last) != keys.phase2_iv("sha256", IV0, last)  # alive, moved on
    # Chain 1, the least recently used, was dropped: it starts over.
    assert initiator.iv(1) == keys.phase2_iv("sha256", IV0, 1)
    initiator.forget(last)
    assert initiator.iv(last) == keys.phase2_iv("sha256", IV0, last)


@pytest.mark.parametrize("size", [0, 15, 17])
def test_a_body_of_partial_blocks_is_refused(size: int) -> None:
    _, responder = pair()
    with pytest.raises(CryptoError, match=f"body of {size} bytes is not a whole number"):
        responder.decrypt(0, bytes(size))


def test_aead_and_wrong_iv_sizes_are_refused() -> None:
    with pytest.raises(LocalError, match="IKEv1 needs a CBC cipher"):
        IkeV1Cipher(encr_for(EncrId.AES_GCM_16, 128), bytes(20), "sha256", bytes(8))
    with pytest.raises(LocalError, match="first IV must be 16 bytes, got 20"):
        IkeV1Cipher(AES128, KEY, "sha1", bytes(20))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, QM, INFO]), st.booleans(), st.binary(max_size=80)),
        max_size=12,
    )
)
def test_any_interleaving_keeps_both_ends_in_step(
    script: list[tuple[int, bool, bytes]],
) -> None:
    """Whatever order the two ends send in, on whatever chains, each message decrypts
    to what was sent followed by zero padding."""
    ends = pair()
    for mid, from_initiator, body in script:
        sender, receiver = ends if from_initiator else ends[::-1]
        plain = deliver(sender, receiver, mid, body)
        assert plain[: len(body)] == body
        assert 1 <= len(plain) - len(body) <= 16 and not any(plain[len(body) :])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 3), st.binary(max_size=100))
def test_garbage_decrypts_or_is_refused_and_never_moves_the_chain(mid: int, data: bytes) -> None:
    _, responder = pair()
    before = responder.iv(mid)
    with contextlib.suppress(CryptoError):
        responder.decrypt(mid, data)
    assert responder.iv(mid) == before


# -- key helpers -------------------------------------------------------------------------


def test_hash_table_maps_to_the_hmac_prfs() -> None:
    assert keys.prf_for_hash(P1Hash.SHA1).hash_name == "sha1"
    assert keys.prf_for_hash(P1Hash.SHA2_256).hash_name == "sha256"
    assert keys.hash_for(P1Hash.SHA2_384) == "sha384"
    assert keys.hash_for(P1Hash.SHA2_512) == "sha512"
    with pytest.raises(UnsupportedTransform, match="IKEv1 hash algorithm 1 is not supported"):
        keys.prf_for_hash(P1Hash.MD5)


def test_auth_prf_is_fixed_only_for_ecdsa() -> None:
    sha1 = keys.prf_for_hash(P1Hash.SHA1)
    assert keys.auth_prf(AuthMethod.PSK, sha1) is sha1
    assert keys.auth_prf(AuthMethod.RSA_SIG, sha1) is sha1
    assert keys.auth_prf(AuthMethod.ECDSA_384, sha1).hash_name == "sha384"
    assert keys.auth_prf(AuthMethod.ECDSA_521, sha1).hash_name == "sha512"


def test_derive_phase1_refusals_name_what_was_wrong() -> None:
    prf = keys.prf_for_hash(P1Hash.SHA2_256)
    args = (b"n" * 16, b"m" * 16, b"g" * 32, b"c" * 8, b"d" * 8, AES128, b"x", b"y")
    with pytest.raises(LocalError, match="responder cookie must be 8 bytes, got 7"):
        keys.derive_phase1(prf, b"psk", *args[:4], b"d" * 7, *args[5:])
    with pytest.raises(LocalError, match="pre-shared key is empty"):
        keys.derive_phase1(prf, b"", *args)
    with pytest.raises(LocalError, match="IKEv1 needs a CBC cipher"):
        gcm = encr_for(EncrId.AES_GCM_16, 128)
        keys.derive_phase1(prf, b"psk", *args[:5], gcm, *args[6:])


def test_expand_key_truncates_or_chains() -> None:
    """RFC 2409 Appendix B; the long case is checked against charon in test_v1_keys."""
    prf = keys.prf_for_hash(P1Hash.SHA1)
    e = bytes(range(20))
    assert keys.expand_key(prf, e, 16) == e[:16]
    k1 = prf(e, b"\x00")
    k2 = prf(e, k1)
    assert keys.expand_key(prf, e, AES256.key_length) == (k1 + k2)[:32]


def test_keymat_refusals_and_message_id_range() -> None:
    prf = keys.prf_for_hash(P1Hash.SHA1)
    with pytest.raises(LocalError, match="KEYMAT length must be positive, got 0"):
        keys.keymat(prf, b"d", ProtocolId.IPSEC_ESP, b"spi!", b"ni", b"nr", 0)
    with pytest.raises(LocalError, match="protocol ID 256 does not fit one octet"):
        keys.keymat(prf, b"d", 256, b"spi!", b"ni", b"nr", 16)
    with pytest.raises(LocalError, match="message ID 4294967296 does not fit 32 bits"):
        keys.info_hash(prf, b"a", 1 << 32, b"")


def test_phase1_keys_never_show_in_repr() -> None:
    k = keys.Phase1Keys(*(b"secret" * 3,) * 6)
    assert "secret" not in repr(k) and "736563726574" not in repr(k)
    assert repr(IkeV1Cipher(AES128, KEY, "sha1", IV0)).startswith("IkeV1Cipher(aes128")


# -- the Wireshark record ------------------------------------------------------------------


def test_decryption_record_is_cookie_and_key_in_bare_hex() -> None:
    """``ikev1_decryption_table``: initiator cookie, encryption key (Ka)."""
    k = keys.Phase1Keys(b"s", b"d", b"a", b"e", bytes.fromhex("00ff" * 8), IV0)
    cookie = bytes.fromhex("0123456789abcdef")
    assert ikev1_decryption_record(cookie, k) == "0123456789abcdef," + "00ff" * 8
    assert tshark_ikev1_options([(cookie, k)]) == [
        "-o",
        "uat:ikev1_decryption_table:0123456789abcdef," + "00ff" * 8,
    ]


def test_decryption_record_refuses_a_cookie_of_the_wrong_size() -> None:
    k = keys.Phase1Keys(b"s", b"d", b"a", b"e", KEY, IV0)
    with pytest.raises(LocalError, match="initiator cookie must be 8 bytes"):
        ikev1_decryption_record(b"\x01" * 7, k)


@pytest.mark.parametrize(
    "padding",
    [bytes(4), b"\x00\x00\x00\x03", b"\x01\x02\x03\x03", bytes(16)],
    ids=["zeros", "zeros-and-length", "counting-and-length", "whole-block"],
)
def test_either_padding_style_parses_on_receipt(padding: bytes) -> None:
    """Zero padding (ours and charon's) and padding that ends in a pad-length octet
    both open: the payload chain ends at Next Payload NONE, the rest is ignored."""
    nonce = NoncePayload(bytes(range(48 - 4 - len(padding))))
    first, chain = encode_payloads([nonce])
    assert len(chain + padding) == 48
    _, responder = pair()
    ciphertext = AES128.encrypt(KEY, IV0, chain + padding)
    received = responder.decrypt(0, ciphertext)
    assert parse_payloads(first, received.plaintext, padded=True) == [nonce]
