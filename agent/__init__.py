"""vpnfleet agent: gRPC service, plan store, engine and the userspace IKEv2/ESP stack."""
