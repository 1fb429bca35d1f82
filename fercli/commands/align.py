"""`fer align`: detect and align faces into crops plus a manifest (see fercli.align.runner)."""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.table import Table

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.config import DETECTOR_CHOICES, build_config
from fercli.imagestatus import STATUS_MEANINGS

EXAMPLE = """Examples:

  fer align photos/ aligned/ --detector retinaface-mobilenet --detector-weights mobilenet0.25_Final.pth

  fer data import rafdb ~/RAF-DB --images original && fer align --detector landmarks   # its own landmarks

  fer data import ferplus ~/ferplus && fer align --detector none            # crops already aligned: resize

  fer align photos/ aligned/ --faces all --min-face-size 40 --json

Rerun the same command to resume after Ctrl-C or a crash: finished images are skipped.
"""

STATUS_HELP = {**STATUS_MEANINGS, "ok": "aligned crop written"}  # one vocabulary with fer predict


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill PID` behaves like Ctrl-C: the manifest of finished images is written before exiting."""
    def handler(signum, frame):  # noqa: ANN001
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. some test runners): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@_o.with_options("faces", _o.DETECTION)
def align(
    ctx: typer.Context,
    src: Optional[Path] = typer.Argument(
        None, help="Folder of images (recursive; class and train/valid/test folders are kept), a dataset root, "
        "or a manifest .parquet \\[default: the workspace's current dataset]."),
    dst: Optional[Path] = typer.Argument(None, help="Output folder for crops and manifest.parquet \\[default: WORKSPACE/aligned]."),
    detector: Optional[str] = typer.Option(
        None, "--detector", "-d", help=f"{', '.join(DETECTOR_CHOICES)}: landmarks uses the manifest's own five points (or box); "
        "none only resizes already aligned crops; haar is OpenCV's cascade (boxes only) \\[default: auto: a RetinaFace whose "
        "weights are cached or given (ResNet-50, else MobileNet), else haar; never downloads]."),
    detector_weights: Optional[Path] = typer.Option(
        None, "--detector-weights", help="RetinaFace weights (.pth, or retinaface-pytorch's .zip) \\[default: torch's hub cache; "
        "ResNet-50 weights are downloaded there]."),
    faces: Optional[str] = typer.Option(None, "--faces", help="largest, best (highest score) or all faces of each image \\[default: largest]."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps \\[default: auto]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per detector forward pass \\[default: 4 on CPU, 16 on a GPU]."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Image-decoding worker processes \\[default: up to 4; on CPU a quarter of the cores, none below 4 cores]."),
    split_fractions: _o.SplitFractions = None,
    no_split: _o.NoSplit = None,
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Redo DST from scratch (needed to change settings of an existing DST)."),
    config: Optional[Path] = _o.config_file("align", "an", these=True),
    json_out: bool = _o.json_flag("summary"),
    **detection: Any,
) -> None:
    """Detect faces (RetinaFace), align them onto the ArcFace template and write crops plus DST/manifest.parquet.

    Every source image gets a manifest row with a status (ok, no_face, unreadable, ...) and a reason; a rerun
    skips finished images. The manifest becomes the workspace's current dataset.
    """
    from fercli.align.config import AlignConfig  # light: the stage (OpenCV, torch) comes after validation

    ws = _ui.state(ctx).workspace
    cfg = build_config(AlignConfig, "align", _o.given(AlignConfig, locals(), **detection), workspace=ws, config_file=config)
    from fercli.align import run_align

    command = "fer " + " ".join(sys.argv[1:])
    try:
        with _sigterm_as_interrupt():
            result = run_align(cfg, src, dst, ws=ws, track=_ui.rich_track, command=command)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished images are saved; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    summary = result.summary()
    if json_out:
        _ui.print_json(summary)
    else:
        _ui.say(ctx, f"[dim]source ({result.source.kind}):[/] {result.source.path} -> {ws.rel(result.dst)}")
        if result.detector:
            _ui.say(ctx, f"[dim]detector:[/] {result.detector}" + (f" (auto: {result.detector_note})" if result.detector_note else ""))
        for note in result.notes:
            _ui.say(ctx, note)
        table = Table(title=f"fer align: {result.images:,} images, {result.faces:,} aligned faces")
        table.add_column("status")
        table.add_column("rows", justify="right")
        table.add_column("meaning", style="dim")
        for status, n in result.counts.items():
            table.add_row(status if status == "ok" else f"[yellow]{status}[/]", f"{n:,}", STATUS_HELP.get(status, ""))
        _ui.out.print(table)
        rate = f"{result.images_per_second:.1f} images/s" if result.processed else "nothing new"
        _ui.out.print(f"processed {result.processed:,} images in {result.seconds:.1f}s ({rate}); "
                      f"{result.skipped:,} done by an earlier run were skipped")
        if result.manifest_path is not None and result.faces:
            _ui.out.print(f"wrote {ws.rel(result.manifest_path)}; it is now the workspace's dataset")
    if result.faces == 0:
        where = f" (statuses in {ws.rel(result.manifest_path)})" if result.manifest_path else ""
        typer.echo(f"error: no face could be aligned from {result.source.path}{where}; see the reasons above", err=True)
        raise typer.Exit(1)
