"""Dataclass configs: one per command, loadable from TOML, overridable with `--set key=value`.

Every field carries a one-line `help` (see `option`). The command line is generated from the dataclass:
field `kl_coef` is the flag `--kl-coef`. Precedence, lowest first: the field's default, `--config FILE`
(TOML), the flags given on the command line, then `--set key=value` (repeatable; `a.b=v` reaches a
nested dataclass). The resolved config is written as `config.toml` into every run directory.

A field the user must give is declared `name: str | None = required("help")`: it holds None until given, and
its type says so; `check_required` (run by `build_config`) rejects a config that still lacks it. Values a
config can reject without reading files are rejected by its `check()` method (docs/design.md §4), which the
command's library function calls first.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from rlhfkit.errors import UserError


def option(default: Any = None, help: str = "", *, required: bool = False, positional: bool = False):
    """A config field with its one-line doc. Lists get a fresh copy per instance."""
    meta = {"help": help, "required": required, "positional": positional}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def required(help: str = "", *, positional: bool = False):
    """A field the user must give: None until then, so type it `X | None` (`check_required` rejects a None)."""
    return option(None, help, required=True, positional=positional)


def default_of(base, name: str, default: Any):
    """A subclass's field `name` that changes only the default of `base`'s field (its help stays; a required field
    given a default is required no more)."""
    meta = base.__dataclass_fields__[name].metadata
    return option(default, meta["help"], required=meta["required"] and default is None, positional=meta["positional"])


# ---------------------------------------------------------------------------------------------- types

def _unwrap_optional(tp) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp) -> str:
    base, optional = _unwrap_optional(tp)
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        name = f"list of {item.__name__}"
    else:
        name = getattr(base, "__name__", str(base))
    return f"{name} or none" if optional else name


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _from_text(tp, text: str):
    """Parse a command-line string into `tp`; raise ValueError when it does not fit."""
    base, optional = _unwrap_optional(tp)
    if optional and text.strip().lower() in {"none", "null", ""}:
        return None
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        return [_from_text(item, part.strip()) for part in text.split(",") if part.strip()]
    if base is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(text)
    if base in (int, float, str):
        return base(text)
    raise TypeError(f"unsupported config type {tp}")


def _from_toml(tp, value):
    """Check a TOML value against `tp` (ints are accepted for floats); raise ValueError otherwise."""
    base, optional = _unwrap_optional(tp)
    if value is None and optional:
        return None
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        if isinstance(value, str):
            return _from_text(base, value)
        if not isinstance(value, list):
            raise ValueError(value)
        return [_from_toml(item, v) for v in value]
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base in (bool, str) and isinstance(value, base):
        return value
    raise ValueError(value)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# ------------------------------------------------------------------------------------------- renames
# A config class may rename fields: `RENAMED: ClassVar[dict[str, str]] = {"old_key": "new_key"}`. For one release the
# old name is still accepted as a flag, a TOML key or a `--set` key, with a one-line note on stderr, and a run
# directory's config.toml saved under the old names still resumes (`upgrade_saved`).

def renamed(cls) -> dict[str, str]:
    return getattr(cls, "RENAMED", {})


def deprecation_note(old: str, new: str, *, source: str = "") -> None:
    where = f"{source}: " if source else ""
    print(f"rlhf: {where}'{old}' is deprecated, use '{new}' (the old name is accepted for one release)",
          file=sys.stderr)


def upgrade_saved(cls, table: dict) -> dict:
    """A saved config table (config.toml of a run made before a rename) under today's key names. Where two old
    names became one key, the class's `saved_alias(table, new)` says which old key the run read (default: the
    first listed)."""
    table = dict(table)
    for new in dict.fromkeys(renamed(cls).values()):
        olds = [old for old, n in renamed(cls).items() if n == new and old in table]
        if not olds:
            continue
        pick = getattr(cls, "saved_alias", None)
        chosen = pick(table, new) if pick else olds[0]
        values = {old: table.pop(old) for old in olds}
        if new not in table:
            table[new] = values.get(chosen, values[olds[0]])
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(table.get(f.name), dict):
            table[f.name] = upgrade_saved(hints[f.name], table[f.name])
    return table


# ------------------------------------------------------------------------------------------- merging

def _assign(cfg, key: str, value, *, source: str, parse) -> None:
    """Set dotted `key` on `cfg`, converting `value` with `parse(type, value)`."""
    head, _, rest = key.partition(".")
    names = {f.name: f for f in dataclasses.fields(cfg)}
    if head in renamed(type(cfg)) and head not in names:
        new = renamed(type(cfg))[head]
        deprecation_note(head, new, source=source)
        head, key = new, new + key[len(head):]
    if head not in names:
        known = ", ".join(sorted(names))
        raise UserError(f"{source}: unknown config key '{key}' for {type(cfg).__name__} (known: {known})")
    tp = _hints(type(cfg))[head]
    if names[head].metadata.get("required"):
        tp = _unwrap_optional(tp)[0]  # None only means "not given yet": a value the user gives is an X
    if dataclasses.is_dataclass(tp):
        if rest:
            _assign(getattr(cfg, head), rest, value, source=source, parse=parse)
        elif isinstance(value, dict):
            for k, v in value.items():
                _assign(getattr(cfg, head), k, v, source=source, parse=parse)
        else:
            raise UserError(f"{source}: config key '{key}' is a table, not a value")
        return
    if rest:
        raise UserError(f"{source}: config key '{head}' has no field '{rest}'")
    if isinstance(value, str) and not _is_text(value):
        raise UserError(f"{source}: config key '{key}' is not valid UTF-8 text (got {value!r}: bytes the command line "
                        "could not decode)")
    try:
        setattr(cfg, head, parse(tp, value))
    except (ValueError, TypeError):
        raise UserError(f"{source}: config key '{key}' expects {_type_name(tp)}, got {value!r}") from None


def _is_text(value: str) -> bool:
    """False for a string holding lone surrogates: the bytes of a command-line argument that are not UTF-8
    (Python decodes them as U+DC80..U+DCFF) or half of a pair; no file, database or UTF-8 writer takes it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise UserError(f"{path}: invalid TOML: nested too deeply") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None


def build_config(cls, *, toml_path=None, flags: dict | None = None, sets: list[str] = ()):
    """Resolve a config: defaults < TOML file < command-line flags < `--set key=value`."""
    cfg = cls()
    if toml_path:
        for key, value in load_toml(toml_path).items():
            _assign(cfg, key, value, source=str(toml_path), parse=_from_toml)
    for key, value in (flags or {}).items():
        _assign(cfg, key, value, source=f"--{key.replace('_', '-')}", parse=_flag_value)
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--set {item!r}: expected key=value")
        _assign(cfg, key.strip(), value.strip(), source=f"--set {key.strip()}", parse=_from_text)
    check_required(cfg)
    return cfg


def _flag_value(tp, value):
    """Flags arrive as strings, except booleans (store_true/false) which arrive parsed."""
    return value if isinstance(value, bool) else _from_text(tp, value)


def check_at_least(cfg, minimum: int, *keys: str) -> None:
    """`check()`'s test of sizes and counts: each key's value (None: not given, the default applies) at least
    `minimum`, else the one line every command gives: `config key 'batch_size' must be at least 1`."""
    for key in keys:
        value = getattr(cfg, key)
        if value is not None and value < minimum:
            raise UserError(f"config key '{key}' must be at least {minimum}")


def check_positive(cfg, *keys: str) -> None:
    """Each key's value a finite number > 0 (a learning rate: AdamW raises on NaN or a negative one)."""
    for key in keys:
        value = getattr(cfg, key)
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"config key '{key}' must be a finite number > 0")


def check_required(cfg, prefix: str = "") -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_required(value, prefix + f.name + ".")
        elif f.metadata.get("required") and value in (None, "", []):
            flag = f.name if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
            raise UserError(f"missing required {flag} (config key '{prefix}{f.name}')")


# ------------------------------------------------------------------------------------------ argparse

def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per field (`kl_coef` -> `--kl-coef`), plus `--config FILE` and `--set key=value`."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = _hints(cls)[f.name]
        default = getattr(defaults, f.name)
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            continue  # nested tables are reached through --set a.b=value or the TOML file
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="?", default=argparse.SUPPRESS, help=help_text)
            continue
        flag = "--" + f.name.replace("_", "-")
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        # a help text that says its default itself ("default: the reward model") gets no "(default: None)" after it
        suffix = "" if "default:" in help_text else f" (default: {shown})"
        if _unwrap_optional(tp)[0] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text + suffix)
        else:
            metavar = f.name.upper() if f.metadata.get("required") else None
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=metavar,
                                help=help_text + suffix)
    for old, new in renamed(cls).items():
        if new not in skip:
            parser.add_argument("--" + old.replace("_", "-"), dest=new, action=_Deprecated, default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)
    parser.add_argument("--config", dest="_config", metavar="FILE", help="TOML file with config keys")
    parser.add_argument("--set", dest="_sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable; a.b=v for nested keys)")


class _Deprecated(argparse.Action):
    """An old flag name: sets the renamed field and says so on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        deprecation_note(option_string, "--" + self.dest.replace("_", "-"))
        setattr(namespace, self.dest, values)


def from_args(cls, args: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(cls)}
    flags = {k: v for k, v in vars(args).items() if k in names}
    return build_config(cls, toml_path=getattr(args, "_config", None), flags=flags,
                        sets=getattr(args, "_sets", []))


# ---------------------------------------------------------------------------------------------- TOML

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def to_toml(cfg) -> str:
    """TOML text of a config. None values are left out (TOML has no null); nested dataclasses -> tables."""
    lines, tables = [], []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            tables.append((f.name, value))
        elif value is not None:
            lines.append(f"{f.name} = {_toml_value(value)}")
    for name, sub in tables:
        body = to_toml(sub).strip()
        lines += ["", f"[{name}]", *([body] if body else [])]
    return "\n".join(lines) + "\n"

