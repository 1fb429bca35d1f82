"""Rendering shared by all commands: consoles, progress bars, tables, JSON, "using ..." lines."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from fercli.workspace import Artifact, Workspace

T = TypeVar("T")

# Output that is not a terminal (a pipe, a file, a test's capture) has no width; rich would assume 80
# columns and squeeze tables into it. Tables only take the width their content needs, so allow this.
UNBOUNDED_WIDTH = 200


class _Console(Console):
    """A rich console whose tables are never cut: long cells fold onto the next line instead of
    ending in an ellipsis, and output that is not a terminal is not confined to 80 columns
    (``$COLUMNS`` still sets the width)."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if not self.is_terminal and self._width is None and not os.environ.get("COLUMNS"):
            return ConsoleDimensions(max(size.width, UNBOUNDED_WIDTH), size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        width, height = new_size
        self._width, self._height = width, height

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for obj in objects:
            if isinstance(obj, Table):
                for col in obj.columns:
                    if col.overflow == "ellipsis":
                        col.overflow = "fold"
        super().print(*objects, **kwargs)


# Results go to stdout; progress, "using ..." lines and logs go to stderr so `--json` stays clean.
out = _Console(soft_wrap=True)
err = _Console(stderr=True, soft_wrap=True)


class State:
    """Global options from the `fer` callback, shared with every command through ctx.obj."""

    def __init__(self, workspace: str | None = None, quiet: bool = False) -> None:
        self.workspace_arg = workspace
        self.quiet = quiet

    @property
    def workspace(self) -> Workspace:
        return Workspace.find(self.workspace_arg)


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(
        level=level, format="%(message)s", datefmt="[%X]", force=True,
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
    )


def rich_track(iterable: Iterable[T], description: str = "", total: int | None = None) -> Iterator[T]:
    """A :class:`fercli.progress.Track` drawing a rich progress bar on stderr."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)


def say(ctx: typer.Context, message: str) -> None:
    """A status line on stderr (suppressed by --quiet)."""
    if not state(ctx).quiet:
        err.print(message, highlight=False)


def using(ctx: typer.Context, ws: Workspace, art: Artifact) -> None:
    """Tell the user which artifact a stage resolved, and from where."""
    say(ctx, f"[dim]using {art.kind} ({art.origin}):[/] {ws.describe(art)}")


def announcer(ctx: typer.Context, ws: Workspace) -> Callable[[dict[str, Artifact]], None]:
    """A callback for core functions' ``on_inputs``: says which artifacts a stage resolved."""

    def announce(arts: dict[str, Artifact]) -> None:
        for art in arts.values():
            using(ctx, ws, art)

    return announce


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _lowest_recall(row: dict[str, Any]) -> str:
    import math

    recalls = {k[len("recall_"):]: v for k, v in row.items() if k.startswith("recall_") and not math.isnan(v)}
    if not recalls:
        return ""
    worst = min(recalls, key=recalls.__getitem__)
    return f" lowest recall {recalls[worst]:.2f} ({worst})"


class RichTrainProgress:
    """:class:`fercli.training.TrainProgress` as a rich bar per epoch plus one table row per epoch."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task = None
        self._t0 = 0.0
        self._images = 0

    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        import time

        self.close()
        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=err, transient=True,
            disable=not err.is_terminal,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, completed=done, stats="")
        self._t0, self._images = time.perf_counter(), 0

    def step(self, images: int, stats: dict[str, float]) -> None:
        import time

        self._images += images
        rate = self._images / max(time.perf_counter() - self._t0, 1e-9)
        text = f"loss {stats['loss']:.4f}  acc {stats['acc']:.3f}  {rate:,.0f} img/s"
        if self._progress is not None:
            self._progress.update(self._task, advance=1, stats=text)

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.close()
        err.print(
            f"epoch {row['epoch']}: lr {row['lr']:.2g}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
            f"  | valid loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} mean-class {row['val_mean_class_acc']:.4f}"
            f"{_lowest_recall(row)}  | {row['images_per_s']:,.0f} img/s", highlight=False,
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
