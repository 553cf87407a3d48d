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
    FAILED = "failed"


class IkeSaInput(Enum):
    INITIATE = "initiate"
    INIT_RETRY = "init-retry"
    """INVALID_KE_PAYLOAD (or COOKIE): IKE_SA_INIT is sent again."""
    INIT_DONE = "init-done"
    AUTH_DONE = "auth-done"
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
# Any state that is not final can fail.
for _role in Role:
    for _state in IkeSaState:
        if _state is not IkeSaState.FAILED:
            TRANSITIONS[(_role, _state, IkeSaInput.FAILURE)] = IkeSaState.FAILED


def next_state(role: Role, state: IkeSaState, event: IkeSaInput) -> IkeSaState:
    try:
        return TRANSITIONS[(role, state, event)]
    except KeyError:
        raise LocalError(
            f"{role.value} IKE SA in state {state.value} cannot take input {event.value}"
        ) from None
