"""Typed configs: dataclass trees built from YAML files and dotted command-line overrides.

Generic machinery only (stdlib + PyYAML); the run-config tree itself lives in
`biomedgpt.run_config`, each section next to the package it configures (docs/ARCHITECTURE.md, Layers):

    cfg = load_config(RunConfig, ["configs/quickstart.yaml"], ["train.lr=3e-4"])

Files merge in order (later wins; a YAML may name `_base_: other.yaml`, loaded first), then the
overrides apply, then `from_dict` checks every key and type against the dataclass annotations.
Unknown keys and wrong types raise `ConfigError` naming the dotted key, with a "did you mean".
YAML is read with YAML 1.2 floats, so `3e-4` is a float (PyYAML's YAML 1.1 reads it as a string).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import functools
import inspect
import itertools
import os
import re
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, Union

import yaml

T = TypeVar("T")

_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2 floats: PyYAML's 1.1 pattern needs a dot and a signed exponent, so it reads 3e-4 as a str.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_OVERRIDE_KEY_RE = re.compile(r"^[A-Za-z_][\w-]*(?:\.[\w-]+)*$")
BASE_KEY = "_base_"


class ConfigError(ValueError):
    """A config that cannot be built: unknown key, wrong type, invalid value, unreadable file.

    `key` is the dotted key at fault ("" when the message names it already); `str(err)` is
    "key: message", one line, fit for the CLI's "error: ...".
    """

    def __init__(self, message: str, *, key: str = "") -> None:
        self.message = message
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)

    def under(self, prefix: str) -> ConfigError:
        """The same error with `prefix` put in front of its key (a section's dotted path)."""
        return ConfigError(self.message, key=".".join(p for p in (prefix, self.key) if p))


class _Mismatch(ConfigError):
    """A value of the wrong type at exactly `key` (a union tries its other members on it)."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise `ConfigError(message, key=key)` unless `condition`; for `__post_init__` validation."""
    if not condition:
        raise ConfigError(message, key=key)


# ----------------------------------------------------------------------------- YAML reading


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats and duplicate keys rejected."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


def parse_yaml(text: str, *, source: str = "<string>") -> Any:
    """Parse one YAML document the way config files are read; errors name `source` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"invalid YAML in {source}{where}: {problem}") from None


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one config YAML as a plain dict, with its `_base_` file(s) merged underneath."""
    return _load_yaml(Path(path), chain=(), referrer=None)


def _load_yaml(path: Path, *, chain: tuple[Path, ...], referrer: Path | None) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{BASE_KEY} cycle: {cycle}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        via = f" (the {BASE_KEY} of {referrer})" if referrer else ""
        raise ConfigError(f"config file not found: {path}{via}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    data = parse_yaml(text, source=str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {_describe(data)}")
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of them, got {_describe(bases)}")
    merged: dict[str, Any] = {}
    for base in bases:
        parent = _load_yaml(path.parent / base, chain=(*chain, resolved), referrer=path)
        merged = merge_dicts(merged, parent)
    return merge_dicts(merged, data)


# ----------------------------------------------------------------------------- dicts and overrides


def merge_dicts(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: `b` wins; mappings merge key by key, anything else (lists too) is replaced."""
    merged = copy.deepcopy(dict(a))
    for key, value in b.items():
        if isinstance(merged.get(key), Mapping) and isinstance(value, Mapping):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[str, Any]:
    """`"train.lr=3e-4"` -> `("train.lr", 0.0003)`; the value is YAML (`[a, b]`, `null`, `true`)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _OVERRIDE_KEY_RE.match(key):
        raise ConfigError(f"malformed override {text!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
    if BASE_KEY in key.split("."):
        raise ConfigError(f"override {text!r}: {BASE_KEY} can only be set inside a YAML file")
    return key, parse_yaml(raw, source=f"override {text!r}")


def set_dotted(data: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`data` with the dotted `key` set to `value` (sections on the way copied or created)."""
    parts = key.split(".")
    result = dict(data)
    node = result
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, Mapping):
            section = ".".join(parts[: depth + 1])
            raise ConfigError(f"cannot set '{key}': '{section}' holds {_describe(child)}, not a mapping")
        child = dict(child)
        node[part] = child
        node = child
    node[parts[-1]] = value
    return result


def load_config(
    cls: type[T], files: Sequence[str | os.PathLike[str]] = (), overrides: Sequence[str] = ()
) -> T:
    """Merge `files` in order (later wins), apply `overrides` ("a.b=VALUE"), validate into `cls`."""
    data: dict[str, Any] = {}
    for file in files:
        data = merge_dicts(data, load_yaml(file))
    for text in overrides:
        key, value = parse_override(text)
        data = set_dotted(data, key, value)
    return from_dict(cls, data)


def apply_overrides(obj: T, overrides: Sequence[str]) -> T:
    """A validated copy of the config `obj` with dotted overrides applied."""
    data = to_dict(obj)
    for text in overrides:
        key, value = parse_override(text)
        data = set_dotted(data, key, value)
    return from_dict(type(obj), data)


# ----------------------------------------------------------------------------- dict -> dataclass


def from_dict(cls: type[T], data: Mapping[str, Any], *, path: str = "") -> T:
    """Build the dataclass `cls` (and its nested dataclasses) from plain data, checking every type.

    Accepted: int (not bool), float (int too), str, bool, None, Literal[...], list[T], tuple[...],
    dict[str, T], X | None, Path (from str), nested dataclasses. `path` prefixes error keys.
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    return _build(cls, data, path, root=cls)


def _build(cls: type[T], data: Any, path: str, *, root: type) -> T:
    if not isinstance(data, Mapping):
        raise _Mismatch(f"expected a mapping ({cls.__name__}), got {_describe(data)}", key=path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _type_hints(cls)
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"keys must be strings, got {_describe(key)}", key=path)
        if key not in fields:
            raise ConfigError(_unknown_key_message(cls, key, path, root=root))
    kwargs = {
        name: _convert(value, hints[name], _join(path, name), root=root) for name, value in data.items()
    }
    missing = [
        _join(path, name)
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise err.under(path) from None
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err), key=path) from err


def _convert(value: Any, tp: Any, path: str, *, root: type) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if tp is None or tp is type(None):
        return _expect(value is None, None, tp, path)
    if origin in (Union, types.UnionType):
        return _convert_union(value, args, tp, path, root=root)
    if origin is Literal:
        return _convert_literal(value, args, tp, path)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return value if isinstance(value, tp) else _build(tp, value, path, root=root)
    if tp is bool:
        return _expect(isinstance(value, bool), value, tp, path)
    if tp is int:
        return _expect(isinstance(value, int) and not isinstance(value, bool), value, tp, path)
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(_expect(ok, value, tp, path))
    if tp is str:
        return os.fspath(_expect(isinstance(value, (str, os.PathLike)), value, tp, path))
    if tp is Path or (isinstance(tp, type) and issubclass(tp, os.PathLike)):
        return Path(_expect(isinstance(value, (str, os.PathLike)), value, tp, path))
    if origin in (list, tuple, dict) or tp in (list, tuple, dict):
        return _convert_container(value, origin or tp, args, tp, path, root=root)
    if isinstance(tp, type):
        return _expect(isinstance(value, tp), value, tp, path)
    raise TypeError(f"{path}: unsupported config annotation {tp!r}")


def _expect(ok: bool, value: Any, tp: Any, path: str) -> Any:
    if not ok:
        raise _Mismatch(f"expected {_type_name(tp)}, got {_describe(value)}", key=path)
    return value


def _convert_union(value: Any, args: tuple[Any, ...], tp: Any, path: str, *, root: type) -> Any:
    if value is None and type(None) in args:
        return None
    for member in args:
        if member is type(None):
            continue
        try:
            return _convert(value, member, path, root=root)
        except _Mismatch as err:
            if err.key != path:  # deeper in a nested value: that member fits, its contents do not
                raise
    raise _Mismatch(f"expected {_type_name(tp)}, got {_describe(value)}", key=path)


def _convert_literal(value: Any, choices: tuple[Any, ...], tp: Any, path: str) -> Any:
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return value
    # `precision: 32` in YAML is an int; the choice is the string "32": same text, take it.
    if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in choices:
        return str(value)
    message = f"expected {_type_name(tp)}, got {_describe(value)}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
    raise _Mismatch(message, key=path)


def _convert_container(
    value: Any, kind: type, args: tuple[Any, ...], tp: Any, path: str, *, root: type
) -> Any:
    if kind is dict:
        _expect(isinstance(value, Mapping), value, tp, path)
        key_tp, value_tp = args or (Any, Any)
        out = {}
        for k, v in value.items():
            _expect(key_tp is Any or isinstance(k, key_tp), k, key_tp, f"{path} (key {k!r})")
            out[k] = _convert(v, value_tp, _join(path, str(k)), root=root)
        return out
    _expect(isinstance(value, (list, tuple)), value, tp, path)
    if kind is list:
        item_tp = args[0] if args else Any
        return [_convert(v, item_tp, f"{path}[{i}]", root=root) for i, v in enumerate(value)]
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item_tp = args[0] if args else Any
        return tuple(_convert(v, item_tp, f"{path}[{i}]", root=root) for i, v in enumerate(value))
    if len(value) != len(args):
        raise _Mismatch(f"expected {_type_name(tp)} ({len(args)} items), got {_describe(value)}", key=path)
    return tuple(_convert(v, t, f"{path}[{i}]", root=root) for i, (v, t) in enumerate(zip(value, args)))


def _unknown_key_message(cls: type, key: str, path: str, *, root: type) -> str:
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    suggestions = [_join(path, m) for m in difflib.get_close_matches(key, names, n=3, cutoff=0.6)]
    if not suggestions:  # the right name in the wrong section: `model.lr` -> `train.lr`
        all_keys = [k.key for k in describe_keys(root)]
        suggestions = [k for k in all_keys if k.rsplit(".", 1)[-1] == key]
        suggestions = suggestions or difflib.get_close_matches(_join(path, key), all_keys, n=3, cutoff=0.75)
    message = f"unknown key '{_join(path, key)}'"
    if suggestions:
        return message + "; did you mean " + " or ".join(f"'{s}'" for s in suggestions) + "?"
    return message + f"; valid keys{' in ' + repr(path) if path else ''}: {', '.join(names)}"


# ----------------------------------------------------------------------------- dataclass -> dict


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-ready data of a config dataclass: tuples become lists, paths strings."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(obj).__name__}")
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def dump_yaml(obj: Any) -> str:
    """YAML of a config dataclass in field order; `load_config`/`from_dict` read it back equal."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True, default_flow_style=False)


# ----------------------------------------------------------------------------- introspection


class KeyDoc(NamedTuple):
    """One leaf key of a config tree: dotted key, type as written in errors, field docstring."""

    key: str
    type: str
    doc: str


def describe_keys(cls: type, *, prefix: str = "") -> list[KeyDoc]:
    """Every leaf key of the dataclass tree `cls`, in field order, with its type and docstring."""
    out: list[KeyDoc] = []
    hints, docs = _type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, key = hints[f.name], _join(prefix, f.name)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out.extend(describe_keys(tp, prefix=key))
        else:
            out.append(KeyDoc(key, _type_name(tp), docs.get(f.name, "")))
    return out


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The string literal written under each field of a dataclass, by field name (`biomedgpt config --keys`)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in itertools.pairwise(body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is None or tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    if origin in (list, tuple, dict) and args:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    return getattr(tp, "__name__", repr(tp))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    kind = {dict: "mapping"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
