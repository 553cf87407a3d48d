"""IKE SA lifecycle as one table (h11 style).

Every transition is listed; a missing one is our own misuse and raises LocalError
naming role, state and input. A peer's errors never come here: they become
FAILURE inputs after being turned into Notifies and events.
"""

from __future__ import annotations

from enum import Enum

from .errors import LocalError


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class IkeSaState(Enum):
    CREATED = "created"
    INIT_SENT = "init-sent"
    """Initiator: IKE_SA_INIT request in flight."""
    INIT_DONE = "init-done"
    """Responder: IKE_SA_INIT answered, waiting for IKE_AUTH."""
    AUTH_SENT = "auth-sent"
    """Initiator: IKE_AUTH request in flight."""
    ESTABLISHED = "established"
    REKEYED = "rekeyed"
    """Replaced by a new IKE SA (section 2.18), children moved; waiting to be deleted."""
    DELETING = "deleting"
    """Our Delete for this IKE SA is in flight (section 1.4.1)."""
    DELETED = "deleted"
    FAILED = "failed"


class IkeSaInput(Enum):
    INITIATE = "initiate"
    INIT_RETRY = "init-retry"
    """INVALID_KE_PAYLOAD (or COOKIE): IKE_SA_INIT is sent again."""
    INIT_DONE = "init-done"
    AUTH_DONE = "auth-done"
    REKEY_CREATED = "rekey-created"
    """This SA was made by an IKE SA rekey: it starts out established."""
    REKEYED = "rekeyed"
    DELETE = "delete"
    DELETED = "deleted"
    FAILURE = "failure"


_INI, _RES = Role.INITIATOR, Role.RESPONDER
S, E = IkeSaState, IkeSaInput

TRANSITIONS: dict[tuple[Role, IkeSaState, IkeSaInput], IkeSaState] = {
    (_INI, S.CREATED, E.INITIATE): S.INIT_SENT,
    (_INI, S.INIT_SENT, E.INIT_RETRY): S.INIT_SENT,
    (_INI, S.INIT_SENT, E.INIT_DONE): S.AUTH_SENT,
    (_INI, S.AUTH_SENT, E.AUTH_DONE): S.ESTABLISHED,
    (_RES, S.CREATED, E.INIT_DONE): S.INIT_DONE,
    (_RES, S.INIT_DONE, E.AUTH_DONE): S.ESTABLISHED,
}
for _role in Role:
    TRANSITIONS[(_role, S.CREATED, E.REKEY_CREATED)] = S.ESTABLISHED
    TRANSITIONS[(_role, S.ESTABLISHED, E.REKEYED)] = S.REKEYED
    for _state in (S.ESTABLISHED, S.REKEYED):
        TRANSITIONS[(_role, _state, E.DELETE)] = S.DELETING
    for _state in (S.ESTABLISHED, S.REKEYED, S.DELETING):
        TRANSITIONS[(_role, _state, E.DELETED)] = S.DELETED
    # Any state that is not final can fail.
    for _state in IkeSaState:
        if _state not in (S.FAILED, S.DELETED):
            TRANSITIONS[(_role, _state, E.FAILURE)] = S.FAILED


def next_state(role: Role, state: IkeSaState, event: IkeSaInput) -> IkeSaState:
    try:
        return TRANSITIONS[(role, state, event)]
    except KeyError:
        raise LocalError(
            f"{role.value} IKE SA in state {state.value} cannot take input {event.value}"
        ) from None
