"""Command-line flags generated from pydantic configs: one `--flag` per field, `--help` from its docstring.

A nested stage config (RunConfig.sampling, .train, ...) becomes a block of flags named
`--<prefix><field>`; the prefix per group is in `GROUP_PREFIX` (the data and SAE groups are unprefixed:
`--model`, `--layer`, `--n-latents`, `--k`). Parsed values are put back into the same nesting, so the
CLI can never drift from the config.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from flows.config import RunConfig

FLAG_NAMES = {"sae_path": "--sae"}
"""Fields whose flag is not derived from the field name."""
FLAG_ALIASES = {"scorers": ("--scorer",)}
"""Extra spellings users reach for (`--scorer simulation,detection`)."""

GROUP_PREFIX = {"data": "", "sae": "", "train": "train-", "stats": "stats-", "sampling": "sampling-",
                "n2g": "n2g-", "llm": "llm-"}
"""Flag prefix of each nested group of RunConfig."""


def _base_type(annotation: object) -> object:
    """`int | None` -> int; `list[str]` -> str (comma separated on the command line)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _base_type(args[0])
    if origin is list or origin is typing.Literal:
        return str
    return annotation


def _is_group(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def flag_name(dest: str) -> str:
    """`sampling.window` -> `--sampling-window`; `sae.n_latents` -> `--n-latents`; `store` -> `--store`."""
    group, _, field = dest.rpartition(".")
    if dest in FLAG_NAMES:
        return FLAG_NAMES[dest]
    prefix = GROUP_PREFIX.get(group, f"{group}-" if group else "")
    return "--" + (prefix + field).replace("_", "-")


def add_model_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, model: type[BaseModel],
                    skip: Sequence[str] = (), defaults: BaseModel | None = None,
                    hidden: Mapping[str, frozenset[str]] | None = None, group: str = "") -> None:
    """One flag per field of `model`; a field that is itself a config becomes an argument group.

    defaults: the instance whose values the help shows (a RunConfig's nested defaults differ from the
    stage class's own). hidden: fields of a group that get no flag (set from elsewhere).
    """
    for name, field in model.model_fields.items():
        if name in skip or name in (hidden or {}).get(group, ()):
            continue
        dest = f"{group}.{name}" if group else name
        default = getattr(defaults, name) if defaults is not None else field.default
        if _is_group(field.annotation):
            block = parser.add_argument_group(f"{name} ({(field.description or '').rstrip('.')})")
            add_model_flags(block, field.annotation, defaults=default, hidden=hidden, group=name)
            continue
        base = _base_type(field.annotation)
        if _is_group(base) or typing.get_origin(field.annotation) is tuple:
            continue  # structured values (a price table, Adam betas) are not flags
        help_text = (field.description or "").rstrip(".")
        flags = [flag_name(dest), *FLAG_ALIASES.get(name, ())]
        if base is bool:  # --x / --no-x, so a default of True can be turned off
            parser.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {default})")
            continue
        choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else None
        shown = ",".join(default) if isinstance(default, list) else default
        required = field.is_required() and defaults is None
        suffix = "" if shown is None or required or shown is typing.Any else f" (default: {shown})"
        parser.add_argument(*flags, dest=dest, type=base if base in (int, float) else str, choices=choices,
                            default=None, required=required, metavar=None if choices else name.upper(),
                            help=help_text + suffix)


def config_values(args: argparse.Namespace) -> dict:
    """Parsed flags -> nested dict of the values given (`sampling.window` -> {"sampling": {"window": ..}})."""
    values: dict = {}
    for dest, value in vars(args).items():
        if value is None:
            continue
        group, _, field = dest.rpartition(".")
        (values.setdefault(group, {}) if group else values)[field] = value
    return values


def config_from_args(model: type[BaseModel], args: argparse.Namespace, defaults: BaseModel | None = None,
                     **extra) -> BaseModel:
    """Build `model` from the flags given, on top of `defaults` (nested groups merged field by field)."""
    given = {k: v for k, v in config_values(args).items() if k in model.model_fields}
    base = defaults.model_dump() if defaults is not None else {}
    for key, value in given.items():
        if isinstance(value, dict):
            base[key] = {**base.get(key, {}), **value}
        else:
            base[key] = value
    return model(**{**base, **extra})


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """`-v/--verbose` on a (sub)command; SUPPRESS keeps a `-v` given before the subcommand."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")


def add_run_flags(parser: argparse.ArgumentParser, only: Collection[str] | None = None) -> None:
    """The flags of `latent-atlas run` (every field of RunConfig, run's defaults in the help); `only`: just
    these top-level fields (a group name brings its whole block)."""
    from flows.config import CLI_HIDDEN, RunConfig

    skip = [] if only is None else [name for name in RunConfig.model_fields if name not in only]
    add_model_flags(parser, RunConfig, skip=skip, defaults=RunConfig(), hidden=CLI_HIDDEN)


def run_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of the flags given, on run's defaults; the store defaults to $LATENT_ATLAS_STORE or
    ./atlas-store."""
    from flows.config import RunConfig
    from flows.store import default_store_root

    store = getattr(args, "store", None) or str(default_store_root())
    return config_from_args(RunConfig, args, defaults=RunConfig(), store=store)  # type: ignore[return-value]
