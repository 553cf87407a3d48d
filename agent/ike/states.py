"""IKE SA lifecycle as tables (h11 style).

Every transition is listed; a missing one is our own misuse and raises LocalError
naming role, state and input. A peer's errors never come here: they become
FAILURE inputs after being turned into Notifies and events.

Beside it, which exchanges each state accepts from the peer, as requests and as
responses (``REQUESTS``, ``RESPONSES``); what a request outside them gets is
``unexpected_request``.
"""

from __future__ import annotations

from enum import Enum

from .constants import ExchangeType
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


# -- the exchanges each state accepts ------------------------------------------------------

AUTHENTICATED = frozenset({S.ESTABLISHED, S.REKEYED, S.DELETING})
"""States in which the peer has been authenticated (section 2.21.3 applies)."""

_LATER = frozenset({ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL})

REQUESTS: dict[IkeSaState, frozenset[ExchangeType]] = {
    # Section 1.2: IKE_SA_INIT, then IKE_AUTH; the later exchanges (sections 1.3, 1.4)
    # only once both are done, and still while the SA is rekeyed or being deleted, so
    # crossing rekeys and deletes can be answered (sections 2.8.1, 2.8.2, 1.4.1).
    S.CREATED: frozenset({ExchangeType.IKE_SA_INIT}),
    S.INIT_DONE: frozenset({ExchangeType.IKE_AUTH}),
    **dict.fromkeys(AUTHENTICATED, _LATER),
}
"""Requests of the peer each state accepts, by exchange type (responder of IKE_SA_INIT
and IKE_AUTH, either end afterwards)."""

RESPONSES: dict[IkeSaState, frozenset[ExchangeType]] = {
    S.INIT_SENT: frozenset({ExchangeType.IKE_SA_INIT}),
    S.AUTH_SENT: frozenset({ExchangeType.IKE_AUTH}),
    **dict.fromkeys(AUTHENTICATED, _LATER),
}
"""Responses each state accepts, by exchange type; a response must also answer the
request in flight (sections 2.1 and 2.2: a response is only ever matched to our own
request), so any other is dropped."""


class Unexpected(Enum):
    """What a request outside ``REQUESTS`` gets."""

    DROP = "drop"
    INVALID_SYNTAX = "invalid-syntax"


def accepts_request(state: IkeSaState, exchange: int) -> bool:
    return exchange in REQUESTS.get(state, frozenset())


def accepts_response(state: IkeSaState, exchange: int) -> bool:
    return exchange in RESPONSES.get(state, frozenset())


def unexpected_request(state: IkeSaState, exchange: int) -> Unexpected:
    """Section 2.21.3: once the IKE SA is authenticated, every request in error MUST get
    a response naming the error, and INVALID_SYNTAX is the one for errors no other type
    covers (section 3.10.1) -- but only for an encrypted request whose checksum held,
    so a plaintext IKE_SA_INIT is dropped. Before authentication nothing is answered
    (section 2.21: whether an error is answered depends on an authenticated IKE SA)."""
    if state in AUTHENTICATED and exchange != ExchangeType.IKE_SA_INIT:
        return Unexpected.INVALID_SYNTAX
    return Unexpected.DROP
