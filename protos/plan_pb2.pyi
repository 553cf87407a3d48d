from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ID_TYPE_UNSPECIFIED: _ClassVar[IdType]
    ID_IPV4_ADDR: _ClassVar[IdType]
    ID_FQDN: _ClassVar[IdType]
    ID_RFC822_ADDR: _ClassVar[IdType]
    ID_IPV6_ADDR: _ClassVar[IdType]
    ID_DER_ASN1_DN: _ClassVar[IdType]
    ID_KEY_ID: _ClassVar[IdType]

class SpdAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPD_ACTION_UNSPECIFIED: _ClassVar[SpdAction]
    SPD_ACTION_PROTECT: _ClassVar[SpdAction]
    SPD_ACTION_BYPASS: _ClassVar[SpdAction]
    SPD_ACTION_DISCARD: _ClassVar[SpdAction]

class AuthMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTH_METHOD_UNSPECIFIED: _ClassVar[AuthMethod]
    AUTH_METHOD_PSK: _ClassVar[AuthMethod]
    AUTH_METHOD_PUBKEY: _ClassVar[AuthMethod]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_TUNNEL: _ClassVar[Mode]
    MODE_TRANSPORT: _ClassVar[Mode]

class StartAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    START_ACTION_UNSPECIFIED: _ClassVar[StartAction]
    START_ACTION_START: _ClassVar[StartAction]
    START_ACTION_TRAP: _ClassVar[StartAction]
    START_ACTION_NONE: _ClassVar[StartAction]

class IkeVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IKE_V2: _ClassVar[IkeVersion]
    IKE_V1: _ClassVar[IkeVersion]
ID_TYPE_UNSPECIFIED: IdType
ID_IPV4_ADDR: IdType
ID_FQDN: IdType
ID_RFC822_ADDR: IdType
ID_IPV6_ADDR: IdType
ID_DER_ASN1_DN: IdType
ID_KEY_ID: IdType
SPD_ACTION_UNSPECIFIED: SpdAction
SPD_ACTION_PROTECT: SpdAction
SPD_ACTION_BYPASS: SpdAction
SPD_ACTION_DISCARD: SpdAction
AUTH_METHOD_UNSPECIFIED: AuthMethod
AUTH_METHOD_PSK: AuthMethod
AUTH_METHOD_PUBKEY: AuthMethod
MODE_UNSPECIFIED: Mode
MODE_TUNNEL: Mode
MODE_TRANSPORT: Mode
START_ACTION_UNSPECIFIED: StartAction
START_ACTION_START: StartAction
START_ACTION_TRAP: StartAction
START_ACTION_NONE: StartAction
IKE_V2: IkeVersion
IKE_V1: IkeVersion

class Identity(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: IdType
    value: str
    def __init__(self, type: _Optional[_Union[IdType, str]] = ..., value: _Optional[str] = ...) -> None: ...

class TrafficSelector(_message.Message):
    __slots__ = ("local_prefix", "remote_prefix", "protocol", "local_port_start", "local_port_end", "remote_port_start", "remote_port_end")
    LOCAL_PREFIX_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_START_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_END_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_START_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_END_FIELD_NUMBER: _ClassVar[int]
    local_prefix: str
    remote_prefix: str
    protocol: int
    local_port_start: int
    local_port_end: int
    remote_port_start: int
    remote_port_end: int
    def __init__(self, local_prefix: _Optional[str] = ..., remote_prefix: _Optional[str] = ..., protocol: _Optional[int] = ..., local_port_start: _Optional[int] = ..., local_port_end: _Optional[int] = ..., remote_port_start: _Optional[int] = ..., remote_port_end: _Optional[int] = ...) -> None: ...

class SpdEntry(_message.Message):
    __slots__ = ("name", "selector", "action", "peer")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    name: str
    selector: TrafficSelector
    action: SpdAction
    peer: str
    def __init__(self, name: _Optional[str] = ..., selector: _Optional[_Union[TrafficSelector, _Mapping]] = ..., action: _Optional[_Union[SpdAction, str]] = ..., peer: _Optional[str] = ...) -> None: ...

class Transform(_message.Message):
    __slots__ = ("type", "id", "key_length")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    type: int
    id: int
    key_length: int
    def __init__(self, type: _Optional[int] = ..., id: _Optional[int] = ..., key_length: _Optional[int] = ...) -> None: ...

class Proposal(_message.Message):
    __slots__ = ("text", "transforms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    text: str
    transforms: _containers.RepeatedCompositeFieldContainer[Transform]
    def __init__(self, text: _Optional[str] = ..., transforms: _Optional[_Iterable[_Union[Transform, _Mapping]]] = ...) -> None: ...

class Credential(_message.Message):
    __slots__ = ("method", "reference", "psk", "epoch", "ca_fingerprint", "accepted_ca_fingerprints", "accepted_psks", "accepted_psk_references")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PSK_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_CA_FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_PSKS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_PSK_REFERENCES_FIELD_NUMBER: _ClassVar[int]
    method: AuthMethod
    reference: str
    psk: bytes
    epoch: int
    ca_fingerprint: str
    accepted_ca_fingerprints: _containers.RepeatedScalarFieldContainer[str]
    accepted_psks: _containers.RepeatedScalarFieldContainer[bytes]
    accepted_psk_references: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, method: _Optional[_Union[AuthMethod, str]] = ..., reference: _Optional[str] = ..., psk: _Optional[bytes] = ..., epoch: _Optional[int] = ..., ca_fingerprint: _Optional[str] = ..., accepted_ca_fingerprints: _Optional[_Iterable[str]] = ..., accepted_psks: _Optional[_Iterable[bytes]] = ..., accepted_psk_references: _Optional[_Iterable[str]] = ...) -> None: ...

class Lifetimes(_message.Message):
    __slots__ = ("ike_rekey_seconds", "child_rekey_seconds", "child_rekey_bytes", "child_rekey_packets", "rand_seconds")
    IKE_REKEY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHILD_REKEY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHILD_REKEY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHILD_REKEY_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RAND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ike_rekey_seconds: int
    child_rekey_seconds: int
    child_rekey_bytes: int
    child_rekey_packets: int
    rand_seconds: int
    def __init__(self, ike_rekey_seconds: _Optional[int] = ..., child_rekey_seconds: _Optional[int] = ..., child_rekey_bytes: _Optional[int] = ..., child_rekey_packets: _Optional[int] = ..., rand_seconds: _Optional[int] = ...) -> None: ...

class Dpd(_message.Message):
    __slots__ = ("delay_seconds", "timeout_seconds")
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    delay_seconds: int
    timeout_seconds: int
    def __init__(self, delay_seconds: _Optional[int] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class NatTraversal(_message.Message):
    __slots__ = ("force_encap", "keepalive_seconds", "remote_behind_nat")
    FORCE_ENCAP_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_BEHIND_NAT_FIELD_NUMBER: _ClassVar[int]
    force_encap: bool
    keepalive_seconds: int
    remote_behind_nat: bool
    def __init__(self, force_encap: _Optional[bool] = ..., keepalive_seconds: _Optional[int] = ..., remote_behind_nat: _Optional[bool] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("name", "remote_addresses", "local_address", "remote_port", "local_id", "remote_id", "auth", "ike_proposals", "esp_proposals", "mode", "lifetimes", "dpd", "nat", "start_action", "local_ts", "remote_ts", "managed", "initiator", "ike_fragmentation_off", "ike_fragment_size", "dynamic_address", "ike_version", "ike_aggressive", "ah_proposals")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ID_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    IKE_PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    ESP_PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LIFETIMES_FIELD_NUMBER: _ClassVar[int]
    DPD_FIELD_NUMBER: _ClassVar[int]
    NAT_FIELD_NUMBER: _ClassVar[int]
    START_ACTION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_TS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_TS_FIELD_NUMBER: _ClassVar[int]
    MANAGED_FIELD_NUMBER: _ClassVar[int]
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    IKE_FRAGMENTATION_OFF_FIELD_NUMBER: _ClassVar[int]
    IKE_FRAGMENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IKE_VERSION_FIELD_NUMBER: _ClassVar[int]
    IKE_AGGRESSIVE_FIELD_NUMBER: _ClassVar[int]
    AH_PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    name: str
    remote_addresses: _containers.RepeatedScalarFieldContainer[str]
    local_address: str
    remote_port: int
    local_id: Identity
    remote_id: Identity
    auth: Credential
    ike_proposals: _containers.RepeatedCompositeFieldContainer[Proposal]
    esp_proposals: _containers.RepeatedCompositeFieldContainer[Proposal]
    mode: Mode
    lifetimes: Lifetimes
    dpd: Dpd
    nat: NatTraversal
    start_action: StartAction
    local_ts: _containers.RepeatedScalarFieldContainer[str]
    remote_ts: _containers.RepeatedScalarFieldContainer[str]
    managed: bool
    initiator: bool
    ike_fragmentation_off: bool
    ike_fragment_size: int
    dynamic_address: bool
    ike_version: IkeVersion
    ike_aggressive: bool
    ah_proposals: _containers.RepeatedCompositeFieldContainer[Proposal]
    def __init__(self, name: _Optional[str] = ..., remote_addresses: _Optional[_Iterable[str]] = ..., local_address: _Optional[str] = ..., remote_port: _Optional[int] = ..., local_id: _Optional[_Union[Identity, _Mapping]] = ..., remote_id: _Optional[_Union[Identity, _Mapping]] = ..., auth: _Optional[_Union[Credential, _Mapping]] = ..., ike_proposals: _Optional[_Iterable[_Union[Proposal, _Mapping]]] = ..., esp_proposals: _Optional[_Iterable[_Union[Proposal, _Mapping]]] = ..., mode: _Optional[_Union[Mode, str]] = ..., lifetimes: _Optional[_Union[Lifetimes, _Mapping]] = ..., dpd: _Optional[_Union[Dpd, _Mapping]] = ..., nat: _Optional[_Union[NatTraversal, _Mapping]] = ..., start_action: _Optional[_Union[StartAction, str]] = ..., local_ts: _Optional[_Iterable[str]] = ..., remote_ts: _Optional[_Iterable[str]] = ..., managed: _Optional[bool] = ..., initiator: _Optional[bool] = ..., ike_fragmentation_off: _Optional[bool] = ..., ike_fragment_size: _Optional[int] = ..., dynamic_address: _Optional[bool] = ..., ike_version: _Optional[_Union[IkeVersion, str]] = ..., ike_aggressive: _Optional[bool] = ..., ah_proposals: _Optional[_Iterable[_Union[Proposal, _Mapping]]] = ...) -> None: ...

class NodePlan(_message.Message):
    __slots__ = ("host", "generation", "content_hash", "identity", "addresses", "subnets", "spd", "peers", "trust_anchors", "source_revision", "crls")
    HOST_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    SUBNETS_FIELD_NUMBER: _ClassVar[int]
    SPD_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    TRUST_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    CRLS_FIELD_NUMBER: _ClassVar[int]
    host: str
    generation: int
    content_hash: str
    identity: Identity
    addresses: _containers.RepeatedScalarFieldContainer[str]
    subnets: _containers.RepeatedScalarFieldContainer[str]
    spd: _containers.RepeatedCompositeFieldContainer[SpdEntry]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    trust_anchors: _containers.RepeatedScalarFieldContainer[bytes]
    source_revision: str
    crls: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, host: _Optional[str] = ..., generation: _Optional[int] = ..., content_hash: _Optional[str] = ..., identity: _Optional[_Union[Identity, _Mapping]] = ..., addresses: _Optional[_Iterable[str]] = ..., subnets: _Optional[_Iterable[str]] = ..., spd: _Optional[_Iterable[_Union[SpdEntry, _Mapping]]] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., trust_anchors: _Optional[_Iterable[bytes]] = ..., source_revision: _Optional[str] = ..., crls: _Optional[_Iterable[bytes]] = ...) -> None: ...
