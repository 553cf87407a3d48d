"""ISAKMP message encryption: the payloads after the header, in CBC mode, with the IV
chains of RFC 2409 Appendix B.

IVs are never sent in IKEv1; both ends compute them:

- phase 1 (message ID 0): the first IV is hash(g^xi | g^xr) (``Phase1Keys.iv0``);
  every later message's IV is the last ciphertext block of the message before it,
  whichever end sent it;
- each other message ID (a Quick Mode, an informational or a transaction exchange)
  has its own chain that starts at hash(last phase 1 CBC output block | M-ID)
  (``keys.phase2_iv``) and then runs on as phase 1's does.

A chain moves only on what both ends saw: a message we encrypt moves it at once (a
retransmission resends the same bytes, never encrypts again); a message we decrypt
moves it only through ``confirm`` once the caller has accepted it (its payloads parse
and its HASH verifies). A datagram that fails on the way, or a retransmission of a
message already confirmed (which the caller recognises by its bytes, before it
decrypts, and answers with its stored reply), leaves the chain as it was.

Padding. The header's Length counts the whole message, padding included (RFC 2408
section 3.1, "Encryption can expand the size of an ISAKMP message"), and no field says
how much of the plaintext is padding: the payload chain ends where a payload's Next
Payload is NONE, and what follows it is padding. We pad as charon 5.9.8 does (its Main
Mode messages 5 and 6 decrypted in test_v1_keys.py): 1 to block-size zero octets,
a whole block when the payloads are already aligned, and no pad-length octet. So the
last octet is always padding, and a peer that reads it as a pad length (RFC 2406
style, as some do) strips only padding. On receipt nothing is stripped here: the
payload parser stops at the end of the chain and ignores the rest, zero or not.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ..errors import CryptoError, LocalError
from ..transforms import Encr
from .keys import phase2_iv

PHASE1_MESSAGE_ID = 0

MAX_CHAINS = 16
"""Phase 2 chains kept at once (least recently used dropped first): more than the
exchanges one ISAKMP SA runs side by side; a message for a dropped chain fails to
decrypt and is dropped, as any other undecryptable datagram."""


@dataclass(frozen=True)
class Decrypted:
    """A decrypted message body, not yet accepted: ``IkeV1Cipher.confirm`` moves the
    chain to ``last_block`` once the caller accepts the message."""

    message_id: int
    plaintext: bytes
    """The payloads and the padding after them."""
    iv: bytes
    """The IV it was decrypted with: the chain's position when it arrived."""
    last_block: bytes
    """Its last ciphertext block: the chain's next IV."""


def pad(body: bytes, block_size: int) -> bytes:
    """``body`` followed by 1 to ``block_size`` zero octets, to a whole number of blocks."""
    return body + bytes(block_size - len(body) % block_size)


class IkeV1Cipher:
    """Encrypts and decrypts the bodies of one ISAKMP SA's messages and keeps their IV
    chains, one for phase 1 and one per other message ID."""

    def __init__(self, encr: Encr, key: bytes, hash_name: str, iv0: bytes) -> None:
        if encr.is_aead:
            raise LocalError(f"{encr.name} cannot protect an ISAKMP SA: IKEv1 needs a CBC cipher")
        if len(iv0) != encr.block_size:
            raise LocalError(f"the first IV must be {encr.block_size} bytes, got {len(iv0)}")
        self.encr = encr
        self._key = key
        self._hash_name = hash_name
        self._phase1 = iv0
        self._chains: OrderedDict[int, bytes] = OrderedDict()

    def __repr__(self) -> str:  # the key never reaches logs
        return f"IkeV1Cipher({self.encr.name}, {len(self._chains)} phase 2 chains)"

    def iv(self, message_id: int) -> bytes:
        """The IV the next message with this ID is encrypted with; a new phase 2 chain
        starts from the phase 1 chain's position now (RFC 2409 Appendix B)."""
        if message_id == PHASE1_MESSAGE_ID:
            return self._phase1
        iv = self._chains.get(message_id)
        if iv is None:
            iv = phase2_iv(self._hash_name, self._phase1, message_id)
            self._chains[message_id] = iv
            while len(self._chains) > MAX_CHAINS:
                self._chains.popitem(last=False)
        self._chains.move_to_end(message_id)
        return iv

    def _advance(self, message_id: int, block: bytes) -> None:
        if message_id == PHASE1_MESSAGE_ID:
            self._phase1 = block
        else:
            self._chains[message_id] = block
            self._chains.move_to_end(message_id)

    def encrypt(self, message_id: int, body: bytes) -> bytes:
        """The ciphertext of ``body`` (the chained payloads, unpadded); the chain moves to
        its last block at once, as the peer's will when it decrypts it."""
        iv = self.iv(message_id)
        ciphertext = self.encr.encrypt(self._key, iv, pad(body, self.encr.block_size))
        self._advance(message_id, ciphertext[-self.encr.block_size :])
        return ciphertext

    def decrypt(self, message_id: int, ciphertext: bytes) -> Decrypted:
        """Decrypt a received body; the chain stays until ``confirm``. CBC has no
        integrity check: a wrong key or IV yields garbage, which the payload parser or
        the HASH check refuses. Raises CryptoError when the body is not whole blocks."""
        size = self.encr.block_size
        if not ciphertext or len(ciphertext) % size:
            raise CryptoError(
                f"encrypted ISAKMP body of {len(ciphertext)} bytes is not a whole number "
                f"of {size}-byte blocks"
            )
        iv = self.iv(message_id)
        plaintext = self.encr.decrypt(self._key, iv, ciphertext)
        return Decrypted(message_id, plaintext, iv, ciphertext[-size:])

    def confirm(self, received: Decrypted) -> None:
        """Accept a decrypted message: its chain moves to its last block. Raises
        LocalError if the chain moved since it was decrypted (a message sent or
        confirmed in between), which would make the IVs of both ends part."""
        if received.message_id == PHASE1_MESSAGE_ID:
            current: bytes | None = self._phase1
        else:
            current = self._chains.get(received.message_id)
        if current != received.iv:
            raise LocalError(
                f"IV chain of message ID {received.message_id} moved since the message "
                "was decrypted"
            )
        self._advance(received.message_id, received.last_block)

    def forget(self, message_id: int) -> None:
        """Drop a finished exchange's chain (a Quick Mode after HASH(3), an
        informational exchange once handled)."""
        self._chains.pop(message_id, None)
