"""Reading and writing stage configs as plain data: config files (TOML/YAML) in, JSON-friendly dicts out.

Kept apart from :mod:`fercli.config` (which builds and validates stage configs, and so knows every
stage) because the workspace, doctor and training read config files too; importing them from here
keeps the import graph acyclic. Light: no torch, pandas or OpenCV at import.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from fercli.errors import FerError


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML or YAML config file into a dict, with a one-line error when malformed."""
    path = Path(path)
    if not path.is_file():
        raise FerError(f"{path}: config file not found")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text()) or {}
        else:
            raise FerError(f"{path}: config files must be .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FerError(f"{path}: malformed config ({exc})") from exc
    except Exception as exc:  # yaml.YAMLError without importing yaml at module level
        if type(exc).__module__.startswith("yaml"):
            raise FerError(f"{path}: malformed config ({' '.join(str(exc).split())})") from exc
        raise
    if not isinstance(data, dict):
        raise FerError(f"{path}: config must be a mapping of option names to values")
    return data


def config_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config (paths as strings), for reports and checkpoints."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
    return out
