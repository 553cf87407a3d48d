"""The agent engine: plan -> IKE SAs and child SAs -> the ESP data plane."""

from .engine import Engine, RouteTable

__all__ = ["Engine", "RouteTable"]
