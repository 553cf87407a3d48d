"""The content hash of a NodePlan, shared by the controller (which sets it) and the
agent (which checks it before using a plan).

The hash covers everything but the hash itself, the generation number and the source
revision, so the same content planned twice — or from two commits that do not change
this host — has the same hash, and a plan that was truncated or altered on the way (or
on disk) no longer matches it.
"""

from __future__ import annotations

import hashlib

from vpnfleet.protos import plan_pb2


def plan_content_hash(plan: plan_pb2.NodePlan) -> str:
    """Hex SHA-256 of the deterministic serialisation of ``plan`` with content_hash,
    generation and source_revision cleared."""
    copy = plan_pb2.NodePlan()
    copy.CopyFrom(plan)
    copy.content_hash = ""
    copy.generation = 0
    copy.source_revision = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()
