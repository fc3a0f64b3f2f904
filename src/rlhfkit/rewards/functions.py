"""Reward functions: loaded from `module:function` or `path/to/file.py:function`, called on a batch, their
answers checked. Whatever goes wrong in the user's code (an exception, a NaN, a wrong count, a value that is not a
number) stops the run with one line naming the function and the dataset row (`errors.UserError`)."""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.errors import UserError


@dataclass(frozen=True)
class RewardFunction:
    spec: str            # as the user wrote it: `module:function` or `file.py:function`
    fn: Callable

    @property
    def name(self) -> str:
        """`module:function` (a file: its stem), the name in logs and error messages."""
        module, _, function = self.spec.rpartition(":")
        return f"{Path(module).stem if module.endswith('.py') else module}:{function}"


def load_object(spec: str, flag: str = "--reward-fn"):
    """The attribute `spec` names: `module:name` (importable) or `file.py:name`, its module imported now; a bad spec
    is one line naming it. Reward functions, judges and the toy world's gold are all loaded through here."""
    module_name, sep, name = spec.rpartition(":")
    if not sep or not module_name or not name:
        raise UserError(f"{flag} {spec!r}: expected module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"{flag} {spec!r}: no such file {path}")
            unique = f"rlhfkit_reward_fn_{abs(hash(str(path.resolve())))}"
            module = sys.modules.get(unique)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(unique, path)
                module = importlib.util.module_from_spec(loader_spec)
                loader_spec.loader.exec_module(module)
                sys.modules[unique] = module
        else:
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except ModuleNotFoundError as exc:
        raise UserError(f"{flag} {spec!r}: no module named {exc.name!r}") from None
    except Exception as exc:  # the user's module failed while importing
        raise UserError(f"{flag} {spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    found = getattr(module, name, None)
    if found is None:
        raise UserError(f"{flag} {spec!r}: {module_name} has no function {name!r}")
    return found


def load_reward_function(spec: str, flag: str = "--reward-fn") -> RewardFunction:
    """`module:function` (importable) or `file.py:function`; a bad spec is one line naming it."""
    fn = load_object(spec, flag)
    if not callable(fn):
        raise UserError(f"{flag} {spec!r}: {spec.rpartition(':')[0]} has no function {spec.rpartition(':')[2]!r}")
    return RewardFunction(spec, fn)


def call_reward_function(f: RewardFunction, prompts: list, completions: list, fields: dict[str, list],
                         where: list[str]) -> list[float | None]:
    """f(prompts, completions, **fields) for one batch, checked: a list of len(prompts) numbers (None: this
    function does not score that completion, as in TRL). `where[i]` names row i (file and prompt number, id) for
    the one-line error."""
    try:
        values = f.fn(prompts=prompts, completions=completions, **fields)
    except Exception as exc:
        raise UserError(f"reward function {f.name} raised {type(exc).__name__}: {exc} on "
                        f"{failing_row(f, prompts, completions, fields, where)}") from None
    try:
        values = list(values)
    except TypeError:
        raise UserError(f"reward function {f.name} returned a {type(values).__name__}, not a list of floats "
                        f"(batch from {where[0]})") from None
    if len(values) != len(prompts):
        raise UserError(f"reward function {f.name} returned {len(values)} values for {len(prompts)} completions "
                        f"(batch from {where[0]})")
    out = []
    for value, row in zip(values, where):
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()  # a NumPy or torch scalar
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise UserError(f"reward function {f.name} returned {value!r} ({type(value).__name__}, not a float) "
                            f"for {row}")
        if value is not None and not math.isfinite(value):
            raise UserError(f"reward function {f.name} returned {value} for {row}")
        out.append(None if value is None else float(value))
    return out


def failing_row(f: RewardFunction, prompts: list, completions: list, fields: dict[str, list],
                where: list[str]) -> str:
    """The first row on which `f` raises when called on it alone (the batch call raised; this finds which row)."""
    for i, row in enumerate(where):
        try:
            f.fn(prompts=prompts[i:i + 1], completions=completions[i:i + 1],
                 **{k: v[i:i + 1] for k, v in fields.items()})
        except Exception:
            return row
    return f"the batch from {where[0]} to {where[-1]} (no row raises alone)"
