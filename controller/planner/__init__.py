"""The planner: topology expansion, policy compilation, credentials, build_plans() — pure."""

from .build import PlanError, Planner, build_plans
from .credentials import PairKeys, ca_fingerprint, pubkey_credential
from .model import (
    AuthMethod,
    Credential,
    Dpd,
    Identity,
    IdType,
    IkeVersion,
    Lifetimes,
    Mode,
    NatTraversal,
    NodePlan,
    Peer,
    Proposal,
    SpdAction,
    SpdEntry,
    StartAction,
    TrafficSelector,
    Transform,
    identity_of,
)
from .profile import HostProfile
from .proposals import ProposalError, ProposalKind, common_proposal, parse_proposal
from .topology import DEFAULT_OVERLAY_POOL, expand_topology

__all__ = [
    "DEFAULT_OVERLAY_POOL",
    "AuthMethod",
    "Credential",
    "Dpd",
    "HostProfile",
    "IdType",
    "Identity",
    "IkeVersion",
    "Lifetimes",
    "Mode",
    "NatTraversal",
    "NodePlan",
    "PairKeys",
    "Peer",
    "PlanError",
    "Planner",
    "Proposal",
    "ProposalError",
    "ProposalKind",
    "SpdAction",
    "SpdEntry",
    "StartAction",
    "TrafficSelector",
    "Transform",
    "build_plans",
    "ca_fingerprint",
    "common_proposal",
    "expand_topology",
    "identity_of",
    "parse_proposal",
    "pubkey_credential",
]
