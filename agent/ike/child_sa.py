"""Child SAs as the IKE SA keeps them: SPIs, policy and lifecycle, never keys.

Keys are derived once (RFC 7296 section 2.17) and leave in ChildSaEstablished /
ChildSaRekeyed events; the record keeps what rekeying and deleting need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from .config import ChildConfig, Mode
from .constants import ProtocolId
from .errors import LocalError
from .events import ChildSaEstablished
from .keys import derive_child_sa_keys
from .payloads import TrafficSelector
from .proposals import AhProposal, ChildProposal, child_label
from .transforms import Prf


class ChildSaState(Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"
    """Our CREATE_CHILD_SA with REKEY_SA for it is in flight."""
    REKEYED = "rekeyed"
    """Replaced; waiting for the delete exchange."""
    DELETING = "deleting"
    """Our delete request for it is in flight."""
    DELETED = "deleted"


class ChildSaInput(Enum):
    REKEY = "rekey"
    REKEY_DONE = "rekey-done"
    REKEY_ABORTED = "rekey-aborted"
    DELETE = "delete"
    DELETED = "deleted"


_C, _I = ChildSaState, ChildSaInput
CHILD_TRANSITIONS: dict[tuple[ChildSaState, ChildSaInput], ChildSaState] = {
    (_C.INSTALLED, _I.REKEY): _C.REKEYING,
    (_C.INSTALLED, _I.REKEY_DONE): _C.REKEYED,  # the peer rekeyed it
    (_C.REKEYING, _I.REKEY_DONE): _C.REKEYED,
    (_C.REKEYING, _I.REKEY_ABORTED): _C.INSTALLED,
    (_C.REKEYED, _I.REKEY_DONE): _C.REKEYED,  # the second exchange of a collision
    (_C.REKEYED, _I.REKEY_ABORTED): _C.REKEYED,
    (_C.INSTALLED, _I.DELETE): _C.DELETING,
    (_C.REKEYING, _I.DELETE): _C.DELETING,
    (_C.REKEYED, _I.DELETE): _C.DELETING,
}
for _state in ChildSaState:
    if _state is not ChildSaState.DELETED:
        CHILD_TRANSITIONS[(_state, ChildSaInput.DELETED)] = ChildSaState.DELETED


@dataclass
class ChildSa:
    config: ChildConfig
    proposal: ChildProposal
    spi_in: bytes
    """Ours: the peer sends ESP (or AH) to it."""
    spi_out: bytes
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    mode: Mode
    state: ChildSaState = ChildSaState.INSTALLED
    peer_rekey: tuple[bytes, bytes, ChildSa] | None = field(default=None, repr=False)
    """Ni, Nr and the new SA of the peer's rekey of this child that crossed ours (2.8.1)."""

    @property
    def name(self) -> str:
        return self.config.name

    def transition(self, event: ChildSaInput) -> None:
        try:
            self.state = CHILD_TRANSITIONS[(self.state, event)]
        except KeyError:
            raise LocalError(
                f"child SA {self.name} ({self.spi_in.hex()}) in state {self.state.value} "
                f"cannot take input {event.value}"
            ) from None

    @property
    def protocol(self) -> ProtocolId:
        """ESP or AH: what REKEY_SA and Delete payloads name it by (sections 3.10, 3.11)."""
        return self.proposal.protocol

    @property
    def usable(self) -> bool:
        """Can be rekeyed or deleted on request."""
        return self.state is ChildSaState.INSTALLED


def child_established(
    prf: Prf,
    sk_d: bytes,
    child: ChildSa,
    ni: bytes,
    nr: bytes,
    *,
    exchange_initiator: bool,
    encap: bool,
    g_ir: bytes | None = None,
) -> ChildSaEstablished:
    """Section 2.17: KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr); the first keys protect
    traffic from the initiator of the exchange that made the SA to its responder. For
    ESP each direction takes its encryption key, then its integrity key; AH has no
    encryption, so each direction's KEYMAT is its integrity key alone."""
    proposal = child.proposal
    if isinstance(proposal, AhProposal):
        encr_id, encr_bits, encr_len = 0, 0, 0
    else:
        encr_id, encr_bits, encr_len = (
            proposal.encr.id,
            proposal.encr.key_bits,
            proposal.encr.key_length,
        )
    integ_len = proposal.integ.key_length if proposal.integ else 0
    keys = derive_child_sa_keys(prf, sk_d, ni, nr, encr_len, integ_len, g_ir)
    if exchange_initiator:
        out_e, out_a, in_e, in_a = keys.encr_i, keys.integ_i, keys.encr_r, keys.integ_r
    else:
        out_e, out_a, in_e, in_a = keys.encr_r, keys.integ_r, keys.encr_i, keys.integ_i
    return ChildSaEstablished(
        name=child.name,
        spi_in=child.spi_in,
        spi_out=child.spi_out,
        encr_id=encr_id,
        encr_key_bits=encr_bits,
        integ_id=proposal.integ.id if proposal.integ else None,
        esn=proposal.esn,
        encr_key_in=in_e,
        integ_key_in=in_a,
        encr_key_out=out_e,
        integ_key_out=out_a,
        local_ts=child.local_ts,
        remote_ts=child.remote_ts,
        mode=child.mode,
        proposal=child_label(proposal),
        encap=encap,
        protocol=proposal.protocol,
    )


def new_child(
    config: ChildConfig,
    proposal: ChildProposal,
    spi_in: bytes,
    spi_out: bytes,
    local_ts: Sequence[TrafficSelector],
    remote_ts: Sequence[TrafficSelector],
    mode: Mode,
) -> ChildSa:
    return ChildSa(config, proposal, spi_in, spi_out, tuple(local_ts), tuple(remote_ts), mode)
