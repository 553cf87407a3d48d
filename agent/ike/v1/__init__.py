"""IKEv1 (RFC 2407, RFC 2408, RFC 2409): a second sans-I/O IKE core beside the IKEv2 one."""
