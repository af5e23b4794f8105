"""Typed configs: defaults live in dataclasses, YAML files and ``--set key=value`` only override them.

A YAML file may name another with ``_base_: other.yaml`` (relative to itself); its keys are merged
first. Unknown keys and values of the wrong type raise ConfigError naming the key and the file. A config
class may list renamed keys in ``RENAMED`` (old dotted key -> new dotted key): an old key is refused with a
message giving the new one (``upgrade_renamed`` moves them instead, for configs that pamtri itself stored).
A section (a dataclass-typed field) starts from that field's own default, so two configs can share a
section class with different defaults (``field(default_factory=lambda: OptimConfig(lr=1e-3))``).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .atomic import atomic_write_text
from .errors import ConfigError

T = TypeVar("T")
BASE_KEY = "_base_"


def read_yaml(path: str | os.PathLike) -> dict:
    """Load one YAML mapping (safe_load), following ``_base_`` chains; raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{path}{where}: not valid YAML ({what})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is not None:
        merged = read_yaml(path.parent / base)
        deep_update(merged, data)
        data = merged
    return data


def deep_update(dst: dict, src: dict) -> dict:
    """Merge ``src`` into ``dst`` recursively (mappings merge, everything else replaces)."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            deep_update(dst[key], value)
        else:
            dst[key] = value
    return dst


def parse_overrides(overrides: Iterable[str]) -> dict:
    """Turn ``["a.b=1", "c=[1, 2]"]`` into a nested dict; values are parsed as YAML scalars/lists."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is both a value and a section")
        node[parts[-1]] = value
    return out


def _leaf_keys(data: dict, prefix: str = "") -> Iterable[str]:
    """Dotted keys of the non-mapping values of a nested dict ({'a': {'b': 1}} -> 'a.b')."""
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def check_renamed(cls: type, data: dict, source: str) -> None:
    """Refuse any key of ``data`` that ``cls.RENAMED`` lists, with a ConfigError naming its new name."""
    renamed = getattr(cls, "RENAMED", {})
    for key in _leaf_keys(data):
        if key in renamed:
            raise ConfigError(f"{source}: {key} was renamed {renamed[key]}")


def upgrade_renamed(cls: type, data: dict) -> dict:
    """A copy of ``data`` with the keys ``cls.RENAMED`` lists moved to their new names (for configs that an
    older pamtri stored in checkpoints); a section left empty is dropped."""
    out = copy.deepcopy(data)
    for old, new in getattr(cls, "RENAMED", {}).items():
        found, value = _pop(out, old.split("."))
        if found:
            for part in reversed(new.split(".")):
                value = {part: value}
            deep_update(out, value)
    return out


def _pop(data: dict, parts: list[str]) -> tuple[bool, Any]:
    """(True, value) after removing data[parts[0]][parts[1]]..., and any section that leaves empty;
    (False, None) when there is no such key."""
    head, *rest = parts
    if head not in data:
        return False, None
    if not rest:
        return True, data.pop(head)
    node = data[head]
    if not isinstance(node, dict):
        return False, None
    found, value = _pop(node, rest)
    if found and not node:
        del data[head]
    return found, value


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if errors else f"{source}: key '{key}': bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}': expected a mapping, got {value!r}")
        return _build(tp, value, source, key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: key '{key}': expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{source}: key '{key}': expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{source}: key '{key}': expected one of {list(args)}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: key '{key}': expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: key '{key}': expected a string, got {value!r}")
    return value


def _build(cls: type[T], data: dict, source: str, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (valid keys here: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):  # a section: this field's own default, then the keys given
            value = data.get(f.name, {})
            if isinstance(value, dict):
                value = deep_update(to_dict(_field_default(f, tp)), value)
            kwargs[f.name] = _coerce(tp, value, prefix + f.name, source)
        elif f.name in data:
            kwargs[f.name] = _coerce(tp, data[f.name], prefix + f.name, source)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def _field_default(f: dataclasses.Field, tp: type) -> Any:
    """The default value of dataclass field ``f`` (an instance of ``tp`` when it has none)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return tp() if f.default is dataclasses.MISSING else f.default


def from_dict(cls: type[T], data: dict, source: str = "<config>") -> T:
    """Build dataclass ``cls`` from a nested dict, checking keys (renamed ones refused) and types."""
    check_renamed(cls, data, source)
    return _build(cls, data, source)


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                stored: dict | None = None, stored_source: str = "<stored config>") -> T:
    """``stored`` (a run's or a checkpoint's saved config) or else the defaults of ``cls`` <- YAML file ``path``
    <- ``--set`` overrides; validated. ``stored_source`` names ``stored`` in error messages."""
    data = copy.deepcopy(stored) if stored is not None else {}
    sources = [stored_source] if stored is not None else []
    if path:
        yaml_data = read_yaml(path)
        check_renamed(cls, yaml_data, str(path))
        deep_update(data, yaml_data)
        sources.append(str(path))
    source = " + ".join(sources) or "<defaults>"
    over = parse_overrides(overrides)
    check_renamed(cls, over, "--set")
    if over:
        deep_update(data, over)
        source += " (with --set overrides)"
    return from_dict(cls, data, source)


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (tuples become lists)."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def config_yaml(cfg: Any) -> str:
    """The resolved config as YAML text (what ``save_config`` writes and ``--print-config`` prints)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, config_yaml(cfg))
