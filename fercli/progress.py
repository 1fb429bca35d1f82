"""Progress reporting without a UI dependency.

Core modules never import rich: long loops take a ``track`` callable with the signature of
:func:`no_track` and wrap their iterable in it. The CLI passes a rich progress bar; library users and
tests get the silent default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")


class Track(Protocol):
    def __call__(self, iterable: Iterable[T], description: str = "", total: int | None = None) -> Iterable[T]: ...


def no_track(iterable: Iterable[T], description: str = "", total: int | None = None) -> Iterator[T]:
    """The silent tracker: yields the items unchanged."""
    yield from iterable
