"""IKEv2 protocol core: sans-I/O, no clock, stdlib and cryptography only.

Layers, bottom up: buffer (wire reads/writes), constants (IANA numbers), payloads /
sa_payload / message (RFC 7296 codec), transforms / crypto / keys (algorithms, SK
payload, key derivation), proposals / traffic_selectors (negotiation), and the
IKE SA connection (ike_sa, its receive path in inbound and what it sends in outbound,
with tasks/ per exchange under task_manager).
"""
