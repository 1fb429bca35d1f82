"""Typed stage configs: dataclass defaults < preset < workspace config < ``--config`` file < CLI flags.

Each stage defines one dataclass. :func:`build_config` fills it from the workspace's config table
for the stage, then an explicit config file (a table named after the stage, or a flat mapping),
then the flags the user actually passed (``None`` means "not given"), converting and checking
types so a typo in a config file is a one-line error naming the file and key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from fercli.errors import FerError
from fercli.workspace import Workspace, load_config_file

C = TypeVar("C")


def _convert(value: Any, typ: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        for arg in args:
            try:
                return _convert(value, arg, where, key)
            except FerError:
                continue
        raise FerError(f"{where}: option {key!r} has invalid value {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise FerError(f"{where}: option {key!r} must be a list, got {value!r}")
        args = typing.get_args(typ)
        inner = args[0] if args else Any
        return origin(_convert(v, inner, where, key) for v in value)
    if origin is typing.Literal:
        if value not in typing.get_args(typ):
            raise FerError(f"{where}: option {key!r} must be one of {list(typing.get_args(typ))}, got {value!r}")
        return value
    try:
        if typ is Path:
            return Path(value)
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return str(value)
    except (TypeError, ValueError):
        raise FerError(f"{where}: option {key!r} must be {getattr(typ, '__name__', typ)}, got {value!r}") from None
    return value


def _apply(values: dict[str, Any], source: dict[str, Any], fields: dict[str, Any], where: str) -> None:
    for key, value in source.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise FerError(f"{where}: unknown option {key!r}; known: {', '.join(sorted(fields))}")
        values[name] = _convert(value, fields[name], where, key)


def build_config(
    cls: type[C],
    section: str,
    overrides: dict[str, Any] | None = None,
    workspace: Workspace | None = None,
    config_file: str | os.PathLike[str] | None = None,
    base: dict[str, Any] | None = None,
) -> C:
    """Build a stage config (see the module docstring for precedence).

    ``base`` (e.g. a recipe preset) sits just above the dataclass defaults, below everything else.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    _apply(values, base or {}, fields, "preset")
    if workspace is not None and workspace.config_file is not None:
        _apply(values, workspace.config_section(section), fields, f"{workspace.config_file} [{section}]")
    if config_file is not None:
        data = load_config_file(config_file)
        table = data.get(section, data) if isinstance(data.get(section), dict) else data
        _apply(values, table, fields, str(config_file))
    _apply(values, {k: v for k, v in (overrides or {}).items() if v is not None}, fields, "command line")
    return cls(**values)


def config_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config (paths as strings), for reports and checkpoints."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
    return out
