"""gRPC to the agents: the mTLS client, the certificate an agent presented, and the
conversion between protobuf messages and the controller's plans and status views.

The only controller package (with ``deploy.join_server``) that touches gRPC or generated code.
"""
