"""`fer predict` on one video, camera or stream: rendering of :func:`fercli.video.predict_video`."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from rich.table import Table

from fercli.commands import _ui
from fercli.errors import FerError
from fercli.video.pipeline import predict_video
from fercli.video.source import is_video_run

__all__ = ["is_video_run", "run"]

EXIT_INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C


def _describe(info: Any) -> str:
    size = f"{info.width}x{info.height}"
    if info.kind == "file":
        length = f", {info.frame_count} frames" if info.frame_count else ""
        text = f"{info.name}: {size}, {info.fps:.4g} fps{length}" + (" (read live)" if info.live else "")
    else:
        text = f"{info.name}: {size}, {info.fps:.4g} fps stated, live (frames are dropped when processing falls behind)"
    return text + "".join(f"; {n}" for n in info.notes)


def run(ctx: typer.Context, cfg: Any, ws: Any, *, json_out: bool, csv_out: bool, jsonl_out: bool) -> None:
    """Process ``cfg`` (a PredictConfig naming one video, camera or stream) and report; exit 1 when the
    input could not be read or the run failed part-way, 130 when interrupted (outputs kept either way)."""
    chosen = [name for name, on in (("--json", json_out), ("--csv", csv_out), ("--jsonl", jsonl_out)) if on]
    if len(chosen) > 1:
        raise FerError(f"{' and '.join(chosen)} both write to stdout; choose one (--out DIR writes CSV and JSONL files)")
    streams = [("csv", sys.stdout)] if csv_out else [("jsonl", sys.stdout)] if jsonl_out else []
    res, rec = predict_video(cfg, ws, streams=streams, track=_ui.rich_track,
                             on_model=lambda art: _ui.using(ctx, ws, art),
                             on_open=lambda info: _ui.say(ctx, f"[dim]video:[/] {_describe(info)}"))
    if rec is not None and rec.detector_name is not None:
        _ui.say(ctx, f"[dim]detector:[/] {rec.detector_name}" + (f" (auto: {rec.detector_note})" if rec.detector_note else ""))
    if res.info is None:  # nothing could be read
        if json_out:
            _ui.print_json(res.to_dict())
        name = f"webcam {cfg.webcam}" if cfg.webcam is not None else cfg.inputs[0]
        typer.echo(f"error: {name}: {res.status}: {res.reason}", err=True)
        raise typer.Exit(1)
    info = res.info
    if res.reason == "the output stream was closed":  # `| head`: stdout is gone; say nothing more there
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if json_out:
        _ui.print_json(res.to_dict())
    else:
        short = {c: c[:3] for c in rec.classes}
        # "seen" is the time a track's frames cover (each frame lasts until the next), so it runs one frame
        # past "to" (the last frame's start); a new user read 3.00 against 0.00-2.96 as an error
        table = Table(title=f"{len(res.tracks)} track(s) in {res.frames} frame(s) of {info.name} "
                            f"(smoothing half-life {cfg.smooth:g} s)",
                      caption="from/to: first and last frame's time; seen: time its frames cover")
        for col in ("track", "from (s)", "to (s)", "seen (s)", "dominant", "time share"):
            table.add_column(col)
        for t in res.tracks:
            top = sorted(t["share"].items(), key=lambda kv: -kv[1])[:3]
            table.add_row(f"#{t['track']}", f"{t['first_time']:.2f}", f"{t['last_time']:.2f}", f"{t['duration']:.2f}",
                          t["dominant"], ", ".join(f"{short[c]} {100 * v:.0f}%" for c, v in top if v > 0))
        (_ui.err if streams else _ui.out).print(table)  # stdout carries the rows with --csv / --jsonl
    speed = f" ({res.speed:.2f}x real time)" if res.speed is not None else ""
    _ui.say(ctx, f"processed {res.frames} frame(s), faces detected on {res.detected_frames} "
                 f"(--detect-every {cfg.detect_every}), in {res.seconds:.1f} s{speed}")
    if info.dropped:
        _ui.say(ctx, f"[yellow]dropped {info.dropped} frame(s)[/]: processing fell behind the live input")
    for kind, path in res.outputs.items():
        if path.exists():
            _ui.say(ctx, f"wrote {path}")
    if res.status == "ok":
        return
    colour = "yellow" if res.status in ("partial", "stopped", "interrupted") else "red"
    _ui.say(ctx, f"[{colour}]{res.status}:[/] {res.reason}" + (
        "; everything written so far is complete" if res.outputs and res.status != "partial" else ""))
    if res.status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
    if res.status == "failed":
        raise typer.Exit(1)
