"""`fer demo`: every stage in turn, in a fresh workspace, typed as a user would type it.

On the embedded synthetic sample (see :mod:`fercli.synthetic`) by default, or on a real dataset
(``--data PATH --format ferplus|rafdb|affectnet|folder``, shorter budget, same stages). Budgets
live in the workspace's ``fer.toml``, so the commands themselves carry no paths and no options
beyond the user's own examples. Each command runs as a separate ``fer`` process; the demo prints it
first, times it, reads its artifact's key figure, and finally writes ``report.md``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fercli.errors import FerError
from fercli.fileio import atomic_write_text
from fercli.pipeline import MADE_BY
from fercli.schema import ARTIFACT_FILES, read_artifact_meta
from fercli.workspace import ENV_VAR as WORKSPACE_ENV
from fercli.workspace import Workspace, format_summary

SAMPLE = {"train": 60, "valid": 15, "test": 20}  # synthetic pictures per class and split
TINY_SAMPLE = {"train": 6, "valid": 2, "test": 2}
FORMATS = ("ferplus", "rafdb", "affectnet", "folder")
MARKER = ".fer-demo"

# Budgets for a 2-core CPU: minutes for the synthetic sample, about a quarter of an hour on real data.
# The stages' tables are the same for both; each fills in its own settings (lines ending in a newline).
def _fer_toml(title: str, align: str, teacher: str, student: str, eval_: str = "") -> str:
    return f"""# {title}
[align]
{align}size = 64

[pretrain-teacher]
arch = "resnet18"
input_size = 64
{teacher}workers = 0

[gen-labels]
workers = 0

[train]
arch = "lfer"
input_size = 64
{student}workers = 0

[eval]
workers = 0
{eval_}"""


def synthetic_toml(teacher_epochs: int, teacher_step: int, student_epochs: int, student_step: int) -> str:
    return _fer_toml(
        "fer demo: budgets for the synthetic sample on a small CPU",
        'detector = "landmarks"  # the sample\'s landmarks are known: alignment undoes position, scale and rotation\n',
        f"epochs = {teacher_epochs}\nlr_step = {teacher_step}\n",
        f"epochs = {student_epochs}\nlr = 0.05\nlr_step = {student_step}\n")


def real_toml(detector: str, limit: int, split: str) -> str:
    return _fer_toml(
        "fer demo on a real dataset: a short budget, the same stages", f'detector = "{detector}"\n',
        f"epochs = 3\nlimit = {limit}\nval_fraction = 0.1  # used only when the dataset has no valid split (RAF-DB, AffectNet)\n",
        f"epochs = 3\nlimit = {limit}\nval_fraction = 0.1\n", f'split = "{split}"\n')


# Shared by both: a short latency check of the student, and `fer predict img.png` on an aligned crop.
COMMON_TOML = """
[bench]
models = ["student/best.pt"]
batches = [1]
backends = ["eager", "onnxruntime"]
reps = 30
max_seconds = 1.0

[predict]
no_detect = true  # img.png is an aligned crop
"""


@dataclass
class DemoConfig:
    """Options of `fer demo`."""

    out: Path = Path("runs/demo")
    data: Path | None = None  # a real dataset instead of the synthetic sample
    format: str | None = None  # its format (ferplus, rafdb, affectnet, folder)
    seed: int = 0
    tiny: bool = False  # a few images and epochs: for tests
    overwrite: bool = False


@dataclass
class StageRun:
    command: str
    seconds: float
    artifact: str | None = None
    figure: str = ""
    output: str = ""


@dataclass
class DemoResult:
    out: Path
    synthetic: bool
    stages: list[StageRun] = field(default_factory=list)
    report: Path | None = None
    test_accuracy: float | None = None  # on eval_split (test where the dataset has one)
    eval_split: str | None = None


def _figure(ws: Workspace, kind: str) -> tuple[str | None, str]:
    path = ws.current_path(kind)
    if path is None:
        return None, ""
    meta = read_artifact_meta(path)
    summary = (meta.get("provenance") or {}).get("summary") or {}
    return ws.rel(path), format_summary(summary)


def run_demo(cfg: DemoConfig, announce: Callable[[str], None] = print,
             echo: Callable[[str], None] = lambda s: None) -> DemoResult:
    """Run the demo (see the module docstring); ``announce`` gets each command before it runs."""
    out = Path(cfg.out)
    synthetic = cfg.data is None
    if not synthetic and cfg.format not in FORMATS:
        raise FerError(f"--format must be one of {', '.join(FORMATS)} with --data, got {cfg.format!r}")
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise FerError(f"{out}: not empty; pass --overwrite to replace it, or --out for a new folder")
        if not (out / MARKER).is_file():
            raise FerError(f"{out}: not a folder made by fer demo (no {MARKER}); --overwrite only replaces those: "
                           "choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, "made by fer demo; `fer demo --overwrite` may delete this folder\n")
    ws = Workspace(out)
    result = DemoResult(out.resolve(), synthetic)

    if synthetic:
        from fercli.synthetic import make_sample

        announce("generating the synthetic sample in raw/ (drawn faces; nothing downloaded, no licence needed)")
        make_sample(out / "raw", TINY_SAMPLE if cfg.tiny else SAMPLE, seed=cfg.seed)
        epochs = (1, 1, 2, 2) if cfg.tiny else (6, 4, 12, 9)
        atomic_write_text(out / "fer.toml", synthetic_toml(*epochs) + COMMON_TOML)
        commands = [["align", "raw/", "aligned/"]]
    else:
        detector = "landmarks" if cfg.format == "affectnet" else "none"
        limit = 200 if cfg.tiny else 3000
        toml = real_toml(detector, limit, "test") + COMMON_TOML
        atomic_write_text(out / "fer.toml", toml)
        commands = [["data", "import", str(cfg.format), str(Path(cfg.data).resolve())], ["align"]]
    commands += [["pretrain-teacher"], ["gen-labels"], ["train", "--beta", _paper_beta(cfg.format)], ["eval"], ["bench"],
                 ["export"]]
    for args in commands:
        result.stages.append(_run(args, out, announce, echo, ws))
        if args[0] == "align" and not synthetic and not _has_labelled(ws, "test"):
            # FERPlus as shared has no test split: score on valid, and say so in the report
            atomic_write_text(out / "fer.toml", toml.replace('split = "test"', 'split = "valid"'))
    # `fer predict img.png`: an aligned test face copied into the workspace, as a user's own photo.
    aligned = out / "aligned"
    crops = sorted(p for p in aligned.rglob("*.png") if "test" in p.parts or "valid" in p.parts) or sorted(aligned.rglob("*.png"))
    if crops:
        shutil.copy(crops[0], out / "img.png")
        result.stages.append(_run(["predict", "img.png"], out, announce, echo, ws))
    report = json.loads((out / ARTIFACT_FILES["eval"]).read_text())
    result.test_accuracy, result.eval_split = report["accuracy"], report["manifest"]["split"]
    result.report = write_report(result, report)
    return result


def _paper_beta(dataset_format: str | None) -> str:
    """The paper's best combo-loss beta for the dataset: the affectnet recipe's, else the default."""
    from fercli.training import RECIPES, TrainConfig  # torch: only once the demo runs

    beta = RECIPES["affectnet"]["beta"] if dataset_format == "affectnet" else TrainConfig().beta
    return f"{beta:g}"


def _has_labelled(ws: Workspace, split: str) -> bool:
    from fercli.schema import read_manifest

    path = ws.current_path("dataset")
    return path is not None and not read_manifest(path).labelled([split]).empty


def _run(args: list[str], out: Path, announce: Callable[[str], None], echo: Callable[[str], None],
         ws: Workspace) -> StageRun:
    typed = "fer " + " ".join(shlex.quote(a) for a in args)
    announce(typed)
    t0 = time.perf_counter()
    # The demo folder is the workspace, whatever $FER_WORKSPACE says.
    env = {k: v for k, v in os.environ.items() if k != WORKSPACE_ENV}
    proc = subprocess.run([sys.executable, "-m", "fercli", *args], cwd=out, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    echo(proc.stdout)
    if proc.returncode != 0:
        raise FerError(f"demo stage `{typed}` failed (exit {proc.returncode}): "
                       f"{(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
    run = StageRun(typed, seconds, output=proc.stdout)
    stage = " ".join(args[:2]) if args[0] == "data" else args[0]
    if stage in MADE_BY:
        ws.reload()  # the stage ran in another process
        run.artifact, run.figure = _figure(ws, MADE_BY[stage])
    if stage == "predict":  # the table row of img.png: input, face, box, label, probability
        row = next((ln for ln in proc.stdout.splitlines() if "img.png" in ln and "│" in ln), "")
        cells = [c.strip() for c in row.split("│") if c.strip()]
        run.figure = f"{cells[3]} (p {cells[4]})" if len(cells) >= 5 else ""
    if stage == "bench":
        run.figure = "latency table above"
    return run


def write_report(result: DemoResult, report: dict[str, Any]) -> Path:
    """``report.md``: each stage's command, artifact, time and key figure, plus the figures as PNGs."""
    out = result.out
    lines = ["# fer demo report", ""]
    if result.synthetic:
        lines += ["**The data is synthetic**: drawn cartoon faces whose expression (mouth, brows, eyes) follows the class, "
                  "placed at random positions, scales and rotations in cluttered pictures, with known landmarks. "
                  "It shows the pipeline working end to end; its accuracy says nothing about real faces.", "",
                  "Run the same demo on a real dataset: `fer demo --data PATH --format ferplus|rafdb|affectnet|folder` "
                  "(see data/README.md for each dataset's layout).", ""]
    lines += ["| stage | artifact | seconds | key figure |", "|---|---|---|---|"]
    for s in result.stages:
        lines.append(f"| `{s.command}` | {s.artifact or '-'} | {s.seconds:.1f} | {s.figure or '-'} |")
    total = sum(s.seconds for s in result.stages)
    lines += ["", f"Total: {total:.0f} s. Accuracy on the {report['manifest']['split']} split ({report['images']} images): "
                  f"**{report['accuracy']:.4f}** (mean per-class {report['mean_class_accuracy']:.4f}).", "",
              "## Confusion matrix", "", "![confusion matrix](eval/confusion.png)", "",
              "## Training curves (student)", "", "![training curves](student/curves.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
