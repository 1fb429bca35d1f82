"""`fer predict`: the expression of every face in images, folders, globs or videos."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.config import build_config
from fercli.errors import FerError

EXAMPLE = """Examples:

  fer predict img.jpg                                    # the workspace's student

  fer predict face.jpg                     # offline after install: bundled model, cached RetinaFace or Haar

  fer predict photos/ 'more/*.png' --model student/best.pt --detector retinaface-mobilenet --detector-weights mobilenet0.25_Final.pth --json

  fer predict clip.mp4 --annotate clip_annotated.mp4 --out clip_fer/   # tracked faces, smoothed, every frame

  fer predict --webcam --show --smooth 1 --out session/                  # camera 0; Ctrl-C ends cleanly

  fer predict rtsp://camera.local/stream --detect-every 3 --jsonl > rows.jsonl

  fer predict clip.mp4 --every 15 --annotate annotated/ --csv            # every 15th frame as a picture

  fer predict aligned/train/happiness/*.png --no-detect --model export/model.onnx
"""


@_o.with_options("faces", _o.DETECTION)
def predict(
    ctx: typer.Context,
    inputs: Optional[list[str]] = typer.Argument(None, help="Image files, folders, glob patterns, or one video file or stream URL (rtsp://, http://); with --webcam, the camera index (0)."),
    model: _o.Model = None,
    detector: Optional[str] = typer.Option(None, "--detector", metavar="NAME", help="auto (a RetinaFace whose weights are cached or given, else haar), retinaface-resnet50, retinaface-mobilenet or haar (OpenCV, offline, boxes only)."),
    detector_weights: _o.DetectorWeights = None,
    faces: Optional[str] = typer.Option(None, "--faces", metavar="WHICH", help="all (default), largest or best."),
    no_detect: Optional[bool] = typer.Option(None, "--no-detect", help="Treat each image as an aligned face."),
    every: Optional[int] = typer.Option(None, "--every", metavar="N", help="Videos as pictures: classify every N-th frame (30), untracked; the default for videos among several inputs."),
    tta: Optional[str] = typer.Option(None, "--tta", metavar="MODE", help="none or flip \\[default: the model's recommendation]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", metavar="N", help="Images per detector pass."),
    device: _o.Device = None,
    threads: _o.Threads = None,
    runtime: _o.Runtime = None,
    annotate: Optional[Path] = typer.Option(None, "--annotate", metavar="DIR|FILE.mp4", help="Write copies with boxes, compact labels (hap 94%) and a legend into this folder; for one video, an .mp4 (or a folder for NAME_annotated.mp4) with track ids and smoothed labels."),
    webcam: bool = typer.Option(False, "--webcam", help="Read a camera: --webcam (camera 0) or --webcam N."),
    detect_every: Optional[int] = typer.Option(None, "--detect-every", metavar="K", help="Video: detect and classify every K-th frame; the tracker carries boxes in between (1)."),
    smooth: Optional[float] = typer.Option(None, "--smooth", metavar="SECONDS", help="Video: half-life in seconds of each track's probability average, on the video's timestamps; 0: raw (0.5)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", help="Video: write frames.csv, frames.jsonl, summary.json and timeline.png into this folder."),
    show: Optional[bool] = typer.Option(None, "--show/--headless", help="Video: show the annotated frames in a window (q stops), or not \\[default: headless]."),
    live: Optional[bool] = typer.Option(None, "--live", help="Read a video file as a live source: at its frame rate, dropping frames when processing falls behind."),
    duration: Optional[float] = typer.Option(None, "--duration", metavar="SECONDS", help="Video: stop after this many seconds of input."),
    config: Optional[Path] = _o.config_file("predict"),
    json_out: bool = typer.Option(False, "--json", help="A JSON array: one object per input picture."),
    csv_out: bool = typer.Option(False, "--csv", help="One CSV row per face (video: per frame and track, as processed)."),
    jsonl_out: bool = typer.Option(False, "--jsonl", help="Video: one JSON line per frame and track, as processed."),
    **detection: Any,
) -> None:
    """Detect, align and classify every face; exit code 1 if any input could not be used."""
    from fercli.stage_configs import PredictConfig, is_video_run  # light: the stage (torch, OpenCV) comes after validation

    ws = _ui.state(ctx).workspace
    inputs = list(inputs or [])
    camera = None
    if webcam:  # `fer predict --webcam 1`: the index arrives as the positional argument
        if len(inputs) > 1 or (inputs and not inputs[0].isdigit()):
            raise FerError("--webcam takes a camera index (0, 1, ...), not a file or URL: got "
                           + " ".join(repr(i) for i in inputs))
        camera, inputs = int(inputs[0]) if inputs else 0, []
    cfg = build_config(PredictConfig, "predict", _o.given(PredictConfig, locals(), inputs=tuple(inputs), webcam=camera, **detection),
                       ws, config)
    video_only = {"--webcam": webcam, "--detect-every": detect_every, "--smooth": smooth, "--out": out, "--show": show,
                  "--live": live, "--duration": duration, "--jsonl": jsonl_out or None}
    if is_video_run(cfg) and every is None:
        from fercli.commands import predict_video

        predict_video.run(ctx, cfg, ws, json_out=json_out, csv_out=csv_out, jsonl_out=jsonl_out)
        return
    given = [k for k, v in video_only.items() if v not in (None, False)]
    if given:
        if every is not None:
            why = "with --every, videos are read as pictures"
        elif len(cfg.inputs) == 1:  # one input, but not a video (a picture, a folder, a text file ...)
            why = f"{cfg.inputs[0]} is not a video file, stream URL or camera"
        else:
            why = f"got {len(cfg.inputs)} inputs"
        raise FerError(f"{given[0]} applies to one video file, stream or camera ({why})")
    from fercli.predict import run_predict

    res = run_predict(cfg, ws, track=_ui.rich_track, on_model=lambda art: _ui.using(ctx, ws, art))
    if res.detector is not None:
        _ui.say(ctx, f"[dim]detector:[/] {res.detector}" + (f" (auto: {res.detector_note})" if res.detector_note else ""))
    clf = res.classifier
    if clf.temperature != 1.0 or res.tta != "none":
        _ui.say(ctx, f"[dim]probabilities:[/] temperature {clf.temperature:.4g}, tta {res.tta}")
    classes = list(res.classifier.classes)
    if json_out:
        _ui.print_json([r.to_dict() for r in res.images])
    elif csv_out:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["input", "frame", "status", "reason", "face", "x1", "y1", "x2", "y2", "score", "label", *classes])
        for r in res.images:
            if not r.faces:
                w.writerow([r.input, r.frame, r.status, r.reason or "", "", "", "", "", "", "", "", *[""] * len(classes)])
            for f in r.faces:  # score "-": the detector gives none (haar, --no-detect)
                w.writerow([r.input, r.frame, r.status, r.reason or "", f.index, *(f.box or [""] * 4),
                            "-" if f.score is None else f.score, f.label, *[f"{f.probs[c]:.6f}" for c in classes]])
        sys.stdout.write(buf.getvalue())
    else:
        table = Table(title=f"{res.classifier.arch} ({res.classifier.kind}): {sum(len(r.faces) for r in res.images)} "
                            f"face(s) in {len(res.images)} picture(s)")
        # A picture without a prediction has no probability: its status goes under label and why under
        # "reason" (a column only when some picture has one), never into p, which holds numbers only.
        any_failed = any(not r.faces for r in res.images)
        for col in ("input", "face", "box", "label", "p", "score", *(("reason",) if any_failed else ())):
            table.add_column(col)  # score: the detector's
        for r in res.images:
            where = r.input + (f" @{r.frame}" if r.frame is not None else "")
            if not r.faces:  # status and reason: the same words as fer align (fercli.imagestatus)
                table.add_row(where, "-", "-", f"[red]{r.status}[/]", "-", "-", r.reason or r.status.replace("_", " "))
            for f in r.faces:
                box = "-" if f.box is None else ",".join(f"{v:.0f}" for v in f.box)
                score = "-" if f.score is None else f"{f.score:.3f}"
                table.add_row(where, str(f.index), box, f.label, f"{f.probs[f.label]:.3f}", score,
                              *(("",) if any_failed else ()))
        _ui.out.print(table)
        for p in res.annotated:
            _ui.say(ctx, f"annotated: {p}")
    if res.annotate_error:  # reported after the predictions, which are complete
        typer.echo(f"error: --annotate stopped after {len(res.annotated)} picture(s): {res.annotate_error}", err=True)
    if res.failed:
        _ui.say(ctx, f"[yellow]{res.failed} of {len(res.images)} input(s) gave no prediction[/]")
    if res.failed or res.annotate_error:
        raise typer.Exit(1)
