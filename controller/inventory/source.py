"""YAML with positions: every mapping, sequence and scalar remembers where it came from.

The loader is the only place that reads YAML. Values come back as plain ``dict``,
``list``, ``str``, ``int`` … subclasses carrying a ``mark`` (see :class:`Mark`), so
validation anywhere later can name file, line and column without re-reading files.
Vault-encrypted scalars (``!vault``) come back as :class:`VaultText`, values tagged
``!unsafe`` (Ansible's "never template this") as :class:`UnsafeText`, kept as the string.
A key written twice in one mapping is a warning, and the later value wins (as in
Ansible); a key that overrides one brought in by a merge key (``<<: *defaults``) is not.

An alias (``*name``) gives the very object its anchor made, so a loaded document is a
graph that may share values; nested aliases can make a few hundred bytes stand for a
billion values ("billion laughs"). A file whose aliases stand for more than
:data:`MAX_ALIAS_EXPANSION` values in total is refused at the alias that crosses it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from .errors import InventoryError, InventoryWarning, Mark

MAX_ALIAS_EXPANSION = 100_000
"""Values (mappings, sequences, scalars and keys) that all the aliases of one file may
stand for together: far above what shared defaults in a large fleet need, far below
what could stall anything that walks the loaded values."""


ANSIBLE_VAULT_PREFIX = "$ANSIBLE_VAULT;"
"""How a text encrypted by ansible-vault starts (a ``!vault`` value or a whole file)."""


def is_ansible_vault(text: str) -> bool:
    return text.lstrip().startswith(ANSIBLE_VAULT_PREFIX)


class FileOpener(Protocol):
    """What opens and parses a whole file encrypted with ``ansible-vault encrypt``
    (the vault)."""

    def open_file(self, text: str, path: Path | str) -> Any: ...


class MarkedDict(dict[str, Any]):
    mark: Mark
    key_marks: dict[str, Mark]
    typed_keys: dict[str, Any]
    """Keys YAML reads as other than text (``true``, ``2``, ``1.5``, ``null``): the text
    they are kept under -> the value YAML gives them, which output shows (as Ansible's
    JSON does: ``true``, ``2``, ``null``). Set only on mappings that have such keys."""


class MarkedList(list[Any]):
    mark: Mark


class MarkedStr(str):
    mark: Mark


class MarkedInt(int):
    mark: Mark


class MarkedFloat(float):
    mark: Mark


class UnsafeText(MarkedStr):
    """A string tagged ``!unsafe``: Ansible never templates it; vpnfleet keeps the text."""


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


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for with every alias inside it written out;
    each distinct node is counted once (``sizes`` memoises by identity)."""
    size = sizes.get(id(node))
    if size is None:
        sizes[id(node)] = 1  # an alias to a node still being composed (a cycle)
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(
                _expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value
            )
        else:
            size = 1
        sizes[id(node)] = size
    return size


class _Loader(yaml.SafeLoader):
    """SafeLoader whose containers and scalars carry their position, and which refuses
    aliases that expand beyond :data:`MAX_ALIAS_EXPANSION`."""

    source_path = "<string>"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliased = 0
        self._sizes: dict[int, int] = {}
        self.warnings: list[InventoryWarning] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                stands_for = _expanded_size(target, self._sizes)
                self._aliased += stands_for
                if self._aliased > MAX_ALIAS_EXPANSION:
                    raise InventoryError(
                        f"alias *{event.anchor} (standing for {stands_for} values): the "
                        f"aliases of this file expand to more than {MAX_ALIAS_EXPANSION} "
                        "values; nested anchors and aliases are refused beyond that — "
                        "write the values out or alias smaller ones",
                        Mark(
                            self.source_path, event.start_mark.line + 1, event.start_mark.column + 1
                        ),
                    )
        return super().compose_node(parent, index)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> MarkedDict:
    out = MarkedDict()
    out.mark = _mark(loader.source_path, node)
    out.key_marks = {}
    # Keys written in this mapping itself; those a merge key brings in come first after
    # flattening and may be overridden without a warning.
    own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)
    written: set[str] = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key is not None and not isinstance(key, str | int | float | bool):
            raise InventoryError(
                "mapping keys must be plain scalars", _mark(loader.source_path, key_node)
            )
        skey = str(key)
        if not isinstance(key, str):
            if not hasattr(out, "typed_keys"):
                out.typed_keys = {}
            out.typed_keys[skey] = key
        if id(key_node) in own:
            if skey in written:
                loader.warnings.append(
                    InventoryWarning(
                        f"duplicate key {skey!r} (first at line {out.key_marks[skey].line}); "
                        "the later value is used, as Ansible does: remove one of them",
                        _mark(loader.source_path, key_node),
                    )
                )
            written.add(skey)
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


def _vault_text(scalar: str) -> VaultText:
    """A ``!vault`` scalar without its line breaks and indentation; an ansible-vault text
    (``$ANSIBLE_VAULT;…``) keeps the break after its header line, which ends its vault id."""
    text = scalar.strip()
    if is_ansible_vault(text):
        head, newline, body = text.partition("\n")
        if not newline:  # a folded (">") scalar puts the header on the hex's line
            head, _, body = text.partition(" ")
        return VaultText(f"{head.strip()}\n{''.join(body.split())}")
    return VaultText("".join(scalar.split()))


def _construct_vault(loader: _Loader, node: yaml.Node) -> VaultText:
    if not isinstance(node, yaml.ScalarNode):
        raise InventoryError("!vault must tag a string", _mark(loader.source_path, node))
    out = _vault_text(str(loader.construct_scalar(node)))
    out.mark = _mark(loader.source_path, node)
    return out


def _unsafe(value: Any, mark: Mark) -> Any:
    """``value`` with every string inside it made :class:`UnsafeText`."""
    if isinstance(value, str) and not isinstance(value, VaultText):
        out = UnsafeText(value)
        out.mark = mark_of(value) or mark
        return out
    if isinstance(value, dict):
        for key in value:
            value[key] = _unsafe(value[key], mark)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _unsafe(item, mark)
    return value


def _construct_unsafe(loader: _Loader, node: yaml.Node) -> Any:
    """``!unsafe``: the value as written, never a template (a scalar is always a string,
    as in Ansible: ``!unsafe 3`` is the text "3")."""
    mark = _mark(loader.source_path, node)
    if isinstance(node, yaml.ScalarNode):
        out = UnsafeText(loader.construct_scalar(node))
        out.mark = mark
        return out
    if isinstance(node, yaml.SequenceNode):
        return _unsafe(_construct_sequence(loader, node), mark)
    assert isinstance(node, yaml.MappingNode)
    return _unsafe(_construct_mapping(loader, node), mark)


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
_Loader.add_constructor("!unsafe", _construct_unsafe)


@dataclass(frozen=True, slots=True)
class VaultSpan:
    """Where the text of one ``!vault`` scalar sits in a file, for rewriting it in place:
    ``text[start:end]`` is the scalar after its tag (block header, quotes and all)."""

    start: int
    end: int
    style: str | None  # "|" or ">" (block), '"' or "'" (quoted), None (plain)
    text: VaultText  # the ciphertext, as the loader gives it


def vault_spans(text: str, path: str = "<string>") -> list[VaultSpan]:
    """Every distinct ``!vault`` scalar of a YAML document (an aliased one once), in
    file order. Syntax errors and alias bombs raise :class:`InventoryError`."""
    loader = _Loader(text)
    loader.source_path = path
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, path) from None
    finally:
        loader.dispose()
    found: dict[int, VaultSpan] = {}
    pending = [root] if root is not None else []
    seen: set[int] = set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            pending.extend(v for pair in node.value for v in pair)
        elif isinstance(node, yaml.ScalarNode) and node.tag == "!vault":
            head = text.index("!vault", node.start_mark.index) + len("!vault")
            start = len(text) - len(text[head:].lstrip(" \t"))
            value = _vault_text(str(node.value))
            value.mark = _mark(path, node)
            found[id(node)] = VaultSpan(start, node.end_mark.index, node.style, value)
    return sorted(found.values(), key=lambda span: span.start)


def _syntax_error(exc: yaml.MarkedYAMLError, path: str) -> InventoryError:
    m = exc.problem_mark or exc.context_mark
    mark = Mark(path, m.line + 1, m.column + 1) if m else Mark(path, 1, 1)
    problem = exc.problem or exc.context or "invalid YAML"
    return InventoryError(f"invalid YAML: {problem}", mark)


def load_yaml_text(
    text: str, path: str = "<string>", warnings: list[InventoryWarning] | None = None
) -> Any:
    """Parse one document as Ansible does: a text that is JSON as a whole is read as JSON
    (so ``1e3`` is the number 1000.0, not YAML 1.1's text ``"1e3"``), whatever the file's
    name; anything else as YAML. Syntax errors become :class:`InventoryError` with a mark.

    Values keep the position YAML gives them (a JSON document is YAML too); warnings
    (duplicate keys) are added to ``warnings`` when it is given."""
    try:
        as_json: Any = json.loads(text)
    except ValueError:
        as_json = _NOT_JSON
    loader = _Loader(text)
    loader.source_path = path
    try:
        data = loader.get_single_data()
        if warnings is not None:
            warnings.extend(loader.warnings)
    except InventoryError:
        raise
    except yaml.YAMLError as exc:
        if as_json is not _NOT_JSON:  # JSON that YAML does not take (tabs, say)
            return marked(as_json, Mark(path, 1, 1))
        if isinstance(exc, yaml.MarkedYAMLError):
            raise _syntax_error(exc, path) from None
        raise InventoryError(f"invalid YAML: {exc}", Mark(path, 1, 1)) from None
    finally:
        loader.dispose()
    return data if as_json is _NOT_JSON else _as_json(data, as_json, Mark(path, 1, 1))


_NOT_JSON = object()


def _as_json(ours: Any, theirs: Any, where: Mark) -> Any:
    """The YAML reading ``ours`` of a JSON document, with every scalar JSON reads
    otherwise (``1e3``, ``NaN``, escapes) replaced by JSON's value, at YAML's mark."""
    mark = mark_of(ours) or where
    if isinstance(theirs, dict) and isinstance(ours, MarkedDict):
        for key in list(ours):
            if key in theirs:
                ours[key] = _as_json(ours[key], theirs[key], mark)
        return ours
    if isinstance(theirs, list) and isinstance(ours, list) and len(ours) == len(theirs):
        for i, item in enumerate(theirs):
            ours[i] = _as_json(ours[i], item, mark)
        return ours
    return ours if _same_scalar(ours, theirs) else marked(theirs, mark)


def _same_scalar(ours: Any, theirs: Any) -> bool:
    if theirs is None or isinstance(theirs, bool):
        return ours is theirs
    if isinstance(theirs, str):
        return isinstance(ours, str) and str.__str__(ours) == theirs
    if isinstance(theirs, int):
        return isinstance(ours, int) and not isinstance(ours, bool) and int(ours) == theirs
    if isinstance(theirs, float):
        return isinstance(ours, float) and (
            float(ours) == theirs or (math.isnan(ours) and math.isnan(theirs))
        )
    return False


def read_text(path: Path) -> str:
    """A file's text; unreadable or non-UTF-8 files are inventory errors."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"not UTF-8 text: {exc.reason}", Mark(str(path), 1, 1)) from None
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror}", Mark(str(path), 1, 1)) from None


def load_yaml_file(
    path: Path,
    warnings: list[InventoryWarning] | None = None,
    vault: FileOpener | None = None,
) -> Any:
    """Read and parse a YAML (or JSON) file; see :func:`load_yaml_text`. A file encrypted
    whole by ``ansible-vault encrypt`` is opened with ``vault``."""
    text = read_text(path)
    if is_ansible_vault(text):
        if vault is None:
            raise InventoryError(
                "file encrypted with ansible-vault, but no vault password file was given "
                "(--vault-password-file)",
                Mark(str(path), 1, 1),
            )
        return vault.open_file(text, path)
    return load_yaml_text(text, str(path), warnings)


def marked(value: Any, mark: Mark) -> Any:
    """A plain Python value (from an INI line) as the YAML reader would give it: strings,
    numbers, lists and mappings carrying ``mark``; tuples become lists (as Ansible's
    output shows them)."""
    if value is None or isinstance(value, bool):
        return value
    out: Any
    if isinstance(value, dict):
        out = MarkedDict()
        out.key_marks = {}
        for key, item in value.items():
            out[str(key)] = marked(item, mark)
            out.key_marks[str(key)] = mark
    elif isinstance(value, list | tuple):
        out = MarkedList(marked(item, mark) for item in value)
    elif isinstance(value, str):
        out = MarkedStr(value)
    elif isinstance(value, int):
        out = MarkedInt(value)
    elif isinstance(value, float):
        out = MarkedFloat(value)
    else:
        return value
    out.mark = mark
    return out
