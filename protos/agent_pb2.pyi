from vpnfleet.protos import plan_pb2 as _plan_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PrepareEnrollmentRequest(_message.Message):
    __slots__ = ("tls", "ike", "key_type")
    TLS_FIELD_NUMBER: _ClassVar[int]
    IKE_FIELD_NUMBER: _ClassVar[int]
    KEY_TYPE_FIELD_NUMBER: _ClassVar[int]
    tls: bool
    ike: bool
    key_type: str
    def __init__(self, tls: _Optional[bool] = ..., ike: _Optional[bool] = ..., key_type: _Optional[str] = ...) -> None: ...

class PrepareEnrollmentResponse(_message.Message):
    __slots__ = ("tls_csr", "ike_csr")
    TLS_CSR_FIELD_NUMBER: _ClassVar[int]
    IKE_CSR_FIELD_NUMBER: _ClassVar[int]
    tls_csr: bytes
    ike_csr: bytes
    def __init__(self, tls_csr: _Optional[bytes] = ..., ike_csr: _Optional[bytes] = ...) -> None: ...

class InstallCredentialsRequest(_message.Message):
    __slots__ = ("tls_cert", "ike_cert", "ca_bundle")
    TLS_CERT_FIELD_NUMBER: _ClassVar[int]
    IKE_CERT_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    tls_cert: bytes
    ike_cert: bytes
    ca_bundle: bytes
    def __init__(self, tls_cert: _Optional[bytes] = ..., ike_cert: _Optional[bytes] = ..., ca_bundle: _Optional[bytes] = ...) -> None: ...

class InstallCredentialsResponse(_message.Message):
    __slots__ = ("tls_fingerprint", "ike_fingerprint", "ca_fingerprints", "peers_reestablished")
    TLS_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    IKE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CA_FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    PEERS_REESTABLISHED_FIELD_NUMBER: _ClassVar[int]
    tls_fingerprint: str
    ike_fingerprint: str
    ca_fingerprints: str
    peers_reestablished: int
    def __init__(self, tls_fingerprint: _Optional[str] = ..., ike_fingerprint: _Optional[str] = ..., ca_fingerprints: _Optional[str] = ..., peers_reestablished: _Optional[int] = ...) -> None: ...

class ApplyPlanRequest(_message.Message):
    __slots__ = ("plan", "dry_run", "controller_version")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_VERSION_FIELD_NUMBER: _ClassVar[int]
    plan: _plan_pb2.NodePlan
    dry_run: bool
    controller_version: str
    def __init__(self, plan: _Optional[_Union[_plan_pb2.NodePlan, _Mapping]] = ..., dry_run: _Optional[bool] = ..., controller_version: _Optional[str] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("kind", "section", "name", "details")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Change.Kind]
        ADDED: _ClassVar[Change.Kind]
        REMOVED: _ClassVar[Change.Kind]
        CHANGED: _ClassVar[Change.Kind]
    KIND_UNSPECIFIED: Change.Kind
    ADDED: Change.Kind
    REMOVED: Change.Kind
    CHANGED: Change.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    SECTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    kind: Change.Kind
    section: str
    name: str
    details: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[_Union[Change.Kind, str]] = ..., section: _Optional[str] = ..., name: _Optional[str] = ..., details: _Optional[_Iterable[str]] = ...) -> None: ...

class ApplyPlanResponse(_message.Message):
    __slots__ = ("changed", "changes", "generation", "content_hash", "problems")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    generation: int
    content_hash: str
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    def __init__(self, changed: _Optional[bool] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., generation: _Optional[int] = ..., content_hash: _Optional[str] = ..., problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChildSaStatus(_message.Message):
    __slots__ = ("name", "state", "spi_in", "spi_out", "proposal", "mode", "local_ts", "remote_ts", "established_at", "rekeyed_at", "next_rekey_at", "bytes_in", "bytes_out", "packets_in", "packets_out", "replay_drops", "integrity_failures", "policy_drops")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPI_IN_FIELD_NUMBER: _ClassVar[int]
    SPI_OUT_FIELD_NUMBER: _ClassVar[int]
    PROPOSAL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_TS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_TS_FIELD_NUMBER: _ClassVar[int]
    ESTABLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    REKEYED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_REKEY_AT_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    PACKETS_IN_FIELD_NUMBER: _ClassVar[int]
    PACKETS_OUT_FIELD_NUMBER: _ClassVar[int]
    REPLAY_DROPS_FIELD_NUMBER: _ClassVar[int]
    INTEGRITY_FAILURES_FIELD_NUMBER: _ClassVar[int]
    POLICY_DROPS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    spi_in: int
    spi_out: int
    proposal: str
    mode: str
    local_ts: _containers.RepeatedScalarFieldContainer[str]
    remote_ts: _containers.RepeatedScalarFieldContainer[str]
    established_at: float
    rekeyed_at: float
    next_rekey_at: float
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    replay_drops: int
    integrity_failures: int
    policy_drops: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., spi_in: _Optional[int] = ..., spi_out: _Optional[int] = ..., proposal: _Optional[str] = ..., mode: _Optional[str] = ..., local_ts: _Optional[_Iterable[str]] = ..., remote_ts: _Optional[_Iterable[str]] = ..., established_at: _Optional[float] = ..., rekeyed_at: _Optional[float] = ..., next_rekey_at: _Optional[float] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., packets_in: _Optional[int] = ..., packets_out: _Optional[int] = ..., replay_drops: _Optional[int] = ..., integrity_failures: _Optional[int] = ..., policy_drops: _Optional[int] = ...) -> None: ...

class IkeSaStatus(_message.Message):
    __slots__ = ("peer", "state", "spi_i", "spi_r", "proposal", "local_address", "remote_address", "initiator", "nat_detected", "established_at", "rekeyed_at", "next_rekey_at", "last_liveness_at", "last_error", "children", "unauthenticated_failures", "last_unauthenticated_failure", "nat", "ike_version")
    class Nat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NAT_UNSPECIFIED: _ClassVar[IkeSaStatus.Nat]
        NONE: _ClassVar[IkeSaStatus.Nat]
        DETECTED: _ClassVar[IkeSaStatus.Nat]
        FORCED: _ClassVar[IkeSaStatus.Nat]
    NAT_UNSPECIFIED: IkeSaStatus.Nat
    NONE: IkeSaStatus.Nat
    DETECTED: IkeSaStatus.Nat
    FORCED: IkeSaStatus.Nat
    PEER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPI_I_FIELD_NUMBER: _ClassVar[int]
    SPI_R_FIELD_NUMBER: _ClassVar[int]
    PROPOSAL_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INITIATOR_FIELD_NUMBER: _ClassVar[int]
    NAT_DETECTED_FIELD_NUMBER: _ClassVar[int]
    ESTABLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    REKEYED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_REKEY_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_LIVENESS_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    UNAUTHENTICATED_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_UNAUTHENTICATED_FAILURE_FIELD_NUMBER: _ClassVar[int]
    NAT_FIELD_NUMBER: _ClassVar[int]
    IKE_VERSION_FIELD_NUMBER: _ClassVar[int]
    peer: str
    state: str
    spi_i: int
    spi_r: int
    proposal: str
    local_address: str
    remote_address: str
    initiator: bool
    nat_detected: bool
    established_at: float
    rekeyed_at: float
    next_rekey_at: float
    last_liveness_at: float
    last_error: str
    children: _containers.RepeatedCompositeFieldContainer[ChildSaStatus]
    unauthenticated_failures: int
    last_unauthenticated_failure: str
    nat: IkeSaStatus.Nat
    ike_version: _plan_pb2.IkeVersion
    def __init__(self, peer: _Optional[str] = ..., state: _Optional[str] = ..., spi_i: _Optional[int] = ..., spi_r: _Optional[int] = ..., proposal: _Optional[str] = ..., local_address: _Optional[str] = ..., remote_address: _Optional[str] = ..., initiator: _Optional[bool] = ..., nat_detected: _Optional[bool] = ..., established_at: _Optional[float] = ..., rekeyed_at: _Optional[float] = ..., next_rekey_at: _Optional[float] = ..., last_liveness_at: _Optional[float] = ..., last_error: _Optional[str] = ..., children: _Optional[_Iterable[_Union[ChildSaStatus, _Mapping]]] = ..., unauthenticated_failures: _Optional[int] = ..., last_unauthenticated_failure: _Optional[str] = ..., nat: _Optional[_Union[IkeSaStatus.Nat, str]] = ..., ike_version: _Optional[_Union[_plan_pb2.IkeVersion, str]] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("host", "generation", "content_hash", "plan_applied_at", "agent_version", "uptime_seconds", "peers_total", "peers_up", "ike_sas", "data_plane", "ike_counters", "admission", "unmatched_ike_sa_init", "problems", "drops", "certificates")
    class IkeCountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    HOST_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    PLAN_APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PEERS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PEERS_UP_FIELD_NUMBER: _ClassVar[int]
    IKE_SAS_FIELD_NUMBER: _ClassVar[int]
    DATA_PLANE_FIELD_NUMBER: _ClassVar[int]
    IKE_COUNTERS_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_IKE_SA_INIT_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    host: str
    generation: int
    content_hash: str
    plan_applied_at: float
    agent_version: str
    uptime_seconds: float
    peers_total: int
    peers_up: int
    ike_sas: _containers.RepeatedCompositeFieldContainer[IkeSaStatus]
    data_plane: bool
    ike_counters: _containers.ScalarMap[str, int]
    admission: IkeAdmission
    unmatched_ike_sa_init: UnmatchedIkeSaInit
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    drops: _containers.RepeatedCompositeFieldContainer[DropCount]
    certificates: _containers.RepeatedCompositeFieldContainer[CertificateExpiry]
    def __init__(self, host: _Optional[str] = ..., generation: _Optional[int] = ..., content_hash: _Optional[str] = ..., plan_applied_at: _Optional[float] = ..., agent_version: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., peers_total: _Optional[int] = ..., peers_up: _Optional[int] = ..., ike_sas: _Optional[_Iterable[_Union[IkeSaStatus, _Mapping]]] = ..., data_plane: _Optional[bool] = ..., ike_counters: _Optional[_Mapping[str, int]] = ..., admission: _Optional[_Union[IkeAdmission, _Mapping]] = ..., unmatched_ike_sa_init: _Optional[_Union[UnmatchedIkeSaInit, _Mapping]] = ..., problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ..., drops: _Optional[_Iterable[_Union[DropCount, _Mapping]]] = ..., certificates: _Optional[_Iterable[_Union[CertificateExpiry, _Mapping]]] = ...) -> None: ...

class CertificateExpiry(_message.Message):
    __slots__ = ("kind", "not_after", "subject", "not_before")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[CertificateExpiry.Kind]
        TLS: _ClassVar[CertificateExpiry.Kind]
        IKE: _ClassVar[CertificateExpiry.Kind]
    KIND_UNSPECIFIED: CertificateExpiry.Kind
    TLS: CertificateExpiry.Kind
    IKE: CertificateExpiry.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    kind: CertificateExpiry.Kind
    not_after: float
    subject: str
    not_before: float
    def __init__(self, kind: _Optional[_Union[CertificateExpiry.Kind, str]] = ..., not_after: _Optional[float] = ..., subject: _Optional[str] = ..., not_before: _Optional[float] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("kind", "subject", "message", "since")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Problem.Kind]
        PLAN_ONLY: _ClassVar[Problem.Kind]
        PLAN: _ClassVar[Problem.Kind]
        ROUTE: _ClassVar[Problem.Kind]
        POLICY_RULE: _ClassVar[Problem.Kind]
        TUN: _ClassVar[Problem.Kind]
        SOCKET: _ClassVar[Problem.Kind]
        IKE: _ClassVar[Problem.Kind]
    KIND_UNSPECIFIED: Problem.Kind
    PLAN_ONLY: Problem.Kind
    PLAN: Problem.Kind
    ROUTE: Problem.Kind
    POLICY_RULE: Problem.Kind
    TUN: Problem.Kind
    SOCKET: Problem.Kind
    IKE: Problem.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    kind: Problem.Kind
    subject: str
    message: str
    since: float
    def __init__(self, kind: _Optional[_Union[Problem.Kind, str]] = ..., subject: _Optional[str] = ..., message: _Optional[str] = ..., since: _Optional[float] = ...) -> None: ...

class DropCount(_message.Message):
    __slots__ = ("layer", "reason", "count")
    class Layer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LAYER_UNSPECIFIED: _ClassVar[DropCount.Layer]
        ESP: _ClassVar[DropCount.Layer]
        UDP: _ClassVar[DropCount.Layer]
        RAW_ESP: _ClassVar[DropCount.Layer]
        IKE_SA: _ClassVar[DropCount.Layer]
    LAYER_UNSPECIFIED: DropCount.Layer
    ESP: DropCount.Layer
    UDP: DropCount.Layer
    RAW_ESP: DropCount.Layer
    IKE_SA: DropCount.Layer
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNSPECIFIED: _ClassVar[DropCount.Reason]
        TRUNCATED: _ClassVar[DropCount.Reason]
        UNKNOWN_SPI: _ClassVar[DropCount.Reason]
        REPLAYED: _ClassVar[DropCount.Reason]
        STALE: _ClassVar[DropCount.Reason]
        INTEGRITY: _ClassVar[DropCount.Reason]
        BAD_PADDING: _ClassVar[DropCount.Reason]
        DUMMY: _ClassVar[DropCount.Reason]
        WRONG_NEXT_HEADER: _ClassVar[DropCount.Reason]
        BAD_INNER_PACKET: _ClassVar[DropCount.Reason]
        POLICY: _ClassVar[DropCount.Reason]
        EXPIRED: _ClassVar[DropCount.Reason]
        SHORT: _ClassVar[DropCount.Reason]
        MALFORMED: _ClassVar[DropCount.Reason]
        REJECTED: _ClassVar[DropCount.Reason]
        RECEIVE_BUFFER_FULL: _ClassVar[DropCount.Reason]
    REASON_UNSPECIFIED: DropCount.Reason
    TRUNCATED: DropCount.Reason
    UNKNOWN_SPI: DropCount.Reason
    REPLAYED: DropCount.Reason
    STALE: DropCount.Reason
    INTEGRITY: DropCount.Reason
    BAD_PADDING: DropCount.Reason
    DUMMY: DropCount.Reason
    WRONG_NEXT_HEADER: DropCount.Reason
    BAD_INNER_PACKET: DropCount.Reason
    POLICY: DropCount.Reason
    EXPIRED: DropCount.Reason
    SHORT: DropCount.Reason
    MALFORMED: DropCount.Reason
    REJECTED: DropCount.Reason
    RECEIVE_BUFFER_FULL: DropCount.Reason
    LAYER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    layer: DropCount.Layer
    reason: DropCount.Reason
    count: int
    def __init__(self, layer: _Optional[_Union[DropCount.Layer, str]] = ..., reason: _Optional[_Union[DropCount.Reason, str]] = ..., count: _Optional[int] = ...) -> None: ...

class AdmissionLimit(_message.Message):
    __slots__ = ("name", "value", "refused")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: int
    refused: int
    def __init__(self, name: _Optional[str] = ..., value: _Optional[int] = ..., refused: _Optional[int] = ...) -> None: ...

class IkeAdmission(_message.Message):
    __slots__ = ("half_open", "preauth_fragment_bytes", "cookies_sent", "limits")
    HALF_OPEN_FIELD_NUMBER: _ClassVar[int]
    PREAUTH_FRAGMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    COOKIES_SENT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    half_open: int
    preauth_fragment_bytes: int
    cookies_sent: int
    limits: _containers.RepeatedCompositeFieldContainer[AdmissionLimit]
    def __init__(self, half_open: _Optional[int] = ..., preauth_fragment_bytes: _Optional[int] = ..., cookies_sent: _Optional[int] = ..., limits: _Optional[_Iterable[_Union[AdmissionLimit, _Mapping]]] = ...) -> None: ...

class UnmatchedIkeSaInit(_message.Message):
    __slots__ = ("count", "recent")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    count: int
    recent: _containers.RepeatedCompositeFieldContainer[UnmatchedSource]
    def __init__(self, count: _Optional[int] = ..., recent: _Optional[_Iterable[_Union[UnmatchedSource, _Mapping]]] = ...) -> None: ...

class UnmatchedSource(_message.Message):
    __slots__ = ("address", "port", "count", "last_at")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_AT_FIELD_NUMBER: _ClassVar[int]
    address: str
    port: int
    count: int
    last_at: float
    def __init__(self, address: _Optional[str] = ..., port: _Optional[int] = ..., count: _Optional[int] = ..., last_at: _Optional[float] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ("interval_seconds",)
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    interval_seconds: float
    def __init__(self, interval_seconds: _Optional[float] = ...) -> None: ...

class SaEvent(_message.Message):
    __slots__ = ("kind", "peer", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    peer: str
    detail: str
    def __init__(self, kind: _Optional[str] = ..., peer: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class StatusEvent(_message.Message):
    __slots__ = ("time", "status", "sa_event")
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SA_EVENT_FIELD_NUMBER: _ClassVar[int]
    time: float
    status: AgentStatus
    sa_event: SaEvent
    def __init__(self, time: _Optional[float] = ..., status: _Optional[_Union[AgentStatus, _Mapping]] = ..., sa_event: _Optional[_Union[SaEvent, _Mapping]] = ...) -> None: ...

class RekeyRequest(_message.Message):
    __slots__ = ("target", "peer_pattern")
    class Target(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TARGET_UNSPECIFIED: _ClassVar[RekeyRequest.Target]
        IKE: _ClassVar[RekeyRequest.Target]
        CHILD: _ClassVar[RekeyRequest.Target]
    TARGET_UNSPECIFIED: RekeyRequest.Target
    IKE: RekeyRequest.Target
    CHILD: RekeyRequest.Target
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PEER_PATTERN_FIELD_NUMBER: _ClassVar[int]
    target: RekeyRequest.Target
    peer_pattern: str
    def __init__(self, target: _Optional[_Union[RekeyRequest.Target, str]] = ..., peer_pattern: _Optional[str] = ...) -> None: ...

class RekeyResult(_message.Message):
    __slots__ = ("peer", "ok", "detail")
    PEER_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    peer: str
    ok: bool
    detail: str
    def __init__(self, peer: _Optional[str] = ..., ok: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class RekeyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RekeyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RekeyResult, _Mapping]]] = ...) -> None: ...

class CheckLivenessRequest(_message.Message):
    __slots__ = ("peer_pattern", "wait_seconds")
    PEER_PATTERN_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    peer_pattern: str
    wait_seconds: float
    def __init__(self, peer_pattern: _Optional[str] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class LivenessResult(_message.Message):
    __slots__ = ("peer", "answered", "round_trip_seconds", "detail")
    PEER_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    peer: str
    answered: bool
    round_trip_seconds: float
    detail: str
    def __init__(self, peer: _Optional[str] = ..., answered: _Optional[bool] = ..., round_trip_seconds: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

class CheckLivenessResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LivenessResult]
    def __init__(self, results: _Optional[_Iterable[_Union[LivenessResult, _Mapping]]] = ...) -> None: ...
