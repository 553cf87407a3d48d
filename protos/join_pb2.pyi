from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("token_id", "secret", "host", "tls_csr", "ike_csr")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TLS_CSR_FIELD_NUMBER: _ClassVar[int]
    IKE_CSR_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    secret: str
    host: str
    tls_csr: bytes
    ike_csr: bytes
    def __init__(self, token_id: _Optional[str] = ..., secret: _Optional[str] = ..., host: _Optional[str] = ..., tls_csr: _Optional[bytes] = ..., ike_csr: _Optional[bytes] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("tls_cert", "ike_cert", "ca_cert")
    TLS_CERT_FIELD_NUMBER: _ClassVar[int]
    IKE_CERT_FIELD_NUMBER: _ClassVar[int]
    CA_CERT_FIELD_NUMBER: _ClassVar[int]
    tls_cert: bytes
    ike_cert: bytes
    ca_cert: bytes
    def __init__(self, tls_cert: _Optional[bytes] = ..., ike_cert: _Optional[bytes] = ..., ca_cert: _Optional[bytes] = ...) -> None: ...
