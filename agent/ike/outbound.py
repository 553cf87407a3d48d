"""The messages an IKE SA sends: the header its role and SPIs call for (section 3.1),
the SK payload once keys exist (section 3.14), and RFC 7383 SKF fragments when an
encrypted message would not fit the configured datagram size (section 2.5).

Every function takes the IkeSa it builds for; tasks reach them through
``IkeSa.build_message`` and ``IkeSa.build_datagrams``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import ZERO_SPI, ExchangeType, HeaderFlag
from .crypto import encrypt_message
from .fragments import fragment_message, message_limit
from .message import IkeHeader, serialize_message
from .payloads import Payload

if TYPE_CHECKING:
    from .ike_sa import IkeSa


def build_message(
    sa: IkeSa, exchange: int, message_id: int, response: bool, payloads: list[Payload]
) -> bytes:
    header = message_header(sa, exchange, message_id, response)
    if exchange == ExchangeType.IKE_SA_INIT:
        return serialize_message(header, payloads)
    assert sa._sk_out is not None
    return encrypt_message(header, payloads, sa._sk_out)


def build_datagrams(
    sa: IkeSa, exchange: int, message_id: int, response: bool, payloads: list[Payload]
) -> tuple[bytes, ...]:
    """The message, or its SKF fragments if it is too large (RFC 7383 section 2.5)."""
    whole = build_message(sa, exchange, message_id, response, payloads)
    if exchange == ExchangeType.IKE_SA_INIT or not sa.peer_fragmentation:
        return (whole,)
    assert sa.peer is not None and sa._sk_out is not None
    limit = message_limit(sa.config.fragment_size, sa.peer, encap=sa.encap)
    if len(whole) <= limit:
        return (whole,)
    header = message_header(sa, exchange, message_id, response)
    return fragment_message(header, payloads, sa._sk_out, limit)


def message_header(sa: IkeSa, exchange: int, message_id: int, response: bool) -> IkeHeader:
    flags = HeaderFlag.INITIATOR if sa.is_initiator else HeaderFlag.NONE
    if response:
        flags |= HeaderFlag.RESPONSE
    spi_r = sa.spi_r if sa.keys is not None else ZERO_SPI
    return IkeHeader(sa.spi_i, spi_r, 0, exchange, flags, message_id)
