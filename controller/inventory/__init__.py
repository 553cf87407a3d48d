"""The inventory: hosts, groups and variables as Ansible lays them out, validated up front."""

from .consistency import aggressive_mode_exposure
from .errors import InventoryError, InventoryErrors, InventoryWarning, Mark, did_you_mean
from .limit import LimitError, limit_hosts, limit_terms, match_hosts, split_pattern
from .loader import load_inventory
from .model import ALL, UNGROUPED, Defaults, Group, Host, Inventory, ResolvedHost
from .render import dumps, graph, host_vars, inventory_list
from .schema import (
    DEFAULT_MARK,
    IKEV1_DEFAULT_IKE_PROPOSALS,
    USER_PREFIX,
    VARIABLES,
    Var,
    parse_duration,
)
from .source import MarkedDict, MarkedList, MarkedStr, VaultText, key_mark, mark_of
from .vault import Secret, Vault, VaultError

__all__ = [
    "ALL",
    "DEFAULT_MARK",
    "IKEV1_DEFAULT_IKE_PROPOSALS",
    "UNGROUPED",
    "USER_PREFIX",
    "VARIABLES",
    "Defaults",
    "Group",
    "Host",
    "Inventory",
    "InventoryError",
    "InventoryErrors",
    "InventoryWarning",
    "LimitError",
    "Mark",
    "MarkedDict",
    "MarkedList",
    "MarkedStr",
    "ResolvedHost",
    "Secret",
    "Var",
    "Vault",
    "VaultError",
    "VaultText",
    "aggressive_mode_exposure",
    "did_you_mean",
    "dumps",
    "graph",
    "host_vars",
    "inventory_list",
    "key_mark",
    "limit_hosts",
    "limit_terms",
    "load_inventory",
    "mark_of",
    "match_hosts",
    "parse_duration",
    "split_pattern",
]
