"""YAML with positions: every mapping, sequence and scalar remembers where it came from.

The loader is the only place that reads YAML. Values come back as plain ``dict``,
``list``, ``str``, ``int`` … subclasses carrying a ``mark`` (see :class:`Mark`), so
validation anywhere later can name file, line and column without re-reading files.
Vault-encrypted scalars (``!vault``) come back as :class:`VaultText`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InventoryError, Mark


class MarkedDict(dict[str, Any]):
    mark: Mark
    key_marks: dict[str, Mark]


class MarkedList(list[Any]):
    mark: Mark


class MarkedStr(str):
    mark: Mark


class MarkedInt(int):
    mark: Mark


class MarkedFloat(float):
    mark: Mark


class VaultText(str):
    """The ciphertext of a ``!vault`` value; decrypt with controller.inventory.vault."""

    mark: Mark


def mark_of(value: Any) -> Mark | None:
    """The position a loaded value came from, when it has one."""
    return getattr(value, "mark", None)


def key_mark(mapping: Any, key: str) -> Mark | None:
    """The position of a mapping's key (better than the value's for unknown-key errors)."""
    marks: dict[str, Mark] | None = getattr(mapping, "key_marks", None)
    if marks and key in marks:
        return marks[key]
    return mark_of(mapping)


def _mark(path: str, node: yaml.Node) -> Mark:
    return Mark(path, node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose containers and scalars carry their position."""

    source_path = "<string>"

    def construct_document(self, node: yaml.Node) -> Any:
        return super().construct_document(node)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> MarkedDict:
    out = MarkedDict()
    out.mark = _mark(loader.source_path, node)
    out.key_marks = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) or key is None:
            raise InventoryError(
                "mapping keys must be plain scalars", _mark(loader.source_path, key_node)
            )
        skey = str(key)
        if skey in out:
            raise InventoryError(
                f"duplicate key {skey!r} (first at line {out.key_marks[skey].line})",
                _mark(loader.source_path, key_node),
            )
        out[skey] = loader.construct_object(value_node, deep=True)
        out.key_marks[skey] = _mark(loader.source_path, key_node)
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> MarkedList:
    out = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    out.mark = _mark(loader.source_path, node)
    return out


def _wrap_scalar(constructor: Any, cls: type) -> Any:
    def construct(loader: _Loader, node: yaml.ScalarNode) -> Any:
        value = constructor(loader, node)
        if value is None or isinstance(value, bool):
            return value
        wrapped = cls(value)
        wrapped.mark = _mark(loader.source_path, node)
        return wrapped

    return construct


def _construct_vault(loader: _Loader, node: yaml.Node) -> VaultText:
    if not isinstance(node, yaml.ScalarNode):
        raise InventoryError("!vault must tag a string", _mark(loader.source_path, node))
    out = VaultText("".join(str(loader.construct_scalar(node)).split()))
    out.mark = _mark(loader.source_path, node)
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)
_Loader.add_constructor(
    "tag:yaml.org,2002:str", _wrap_scalar(yaml.SafeLoader.construct_yaml_str, MarkedStr)
)
_Loader.add_constructor(
    "tag:yaml.org,2002:int", _wrap_scalar(yaml.SafeLoader.construct_yaml_int, MarkedInt)
)
_Loader.add_constructor(
    "tag:yaml.org,2002:float", _wrap_scalar(yaml.SafeLoader.construct_yaml_float, MarkedFloat)
)
_Loader.add_constructor("!vault", _construct_vault)


def load_yaml_text(text: str, path: str = "<string>") -> Any:
    """Parse one YAML document; syntax errors become :class:`InventoryError` with a mark."""
    loader = _Loader(text)
    loader.source_path = path
    try:
        return loader.get_single_data()
    except InventoryError:
        raise
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        mark = Mark(path, m.line + 1, m.column + 1) if m else Mark(path, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise InventoryError(f"invalid YAML: {problem}", mark) from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"invalid YAML: {exc}", Mark(path, 1, 1)) from None
    finally:
        loader.dispose()


def load_yaml_file(path: Path) -> Any:
    """Read and parse a YAML file; unreadable or non-UTF-8 files are inventory errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"not UTF-8 text: {exc.reason}", Mark(str(path), 1, 1)) from None
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror}", Mark(str(path), 1, 1)) from None
    return load_yaml_text(text, str(path))
