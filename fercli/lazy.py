"""Lazy re-exports for packages whose submodules import torch, OpenCV or FastAPI.

A package ``__init__`` imports its light config eagerly and names the rest in a table; the module
``__getattr__`` (PEP 562) that :func:`lazy_exports` returns imports only the submodule that defines a
name, on first use, and caches the name in the package, so later lookups are plain attribute reads.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each submodule to the names it provides."""
    where = {name: sub for sub, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        sub = where.get(name)
        if sub is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{sub}"), name)
        setattr(sys.modules[package], name, value)  # found once: the next lookup does not come here
        return value

    return __getattr__
