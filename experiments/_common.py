"""Shared plumbing of the FERPlus study: every step is a `fer` command, every result a JSON file.

The experiment scripts (ablation.py, beta_sweep.py, dist_quality.py) describe *what* to run; this
module runs it:

* the workspace is ``runs/ferplus`` (git-ignored; ``$FER_EXP_WORKSPACE`` overrides), the data is
  ``$FER_SHARED`` or ``../shared`` beside the repository;
* FERPlus is imported twice, 8 and 7 classes, with ``--rename-split valid=test``: the valid split is
  only ever scored at the end, model selection uses ``--val-fraction`` (experiments/protocol.toml);
* a run whose result JSON exists in ``experiments/results/`` is done and skipped; a run with a
  ``last.pt`` is continued with ``--resume``, so a study cut short by a session limit picks up where
  it stopped;
* independent runs go to ``--jobs`` worker threads, one `fer` process each (one CPU thread each).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fercli.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
RESULTS = EXPERIMENTS / "results"
PROTOCOL = EXPERIMENTS / "protocol.toml"
WS = Path(os.environ.get("FER_EXP_WORKSPACE", ROOT / "runs" / "ferplus")).resolve()
SHARED = Path(os.environ.get("FER_SHARED", ROOT.parent / "shared")).resolve()
FERPLUS = SHARED / "datasets" / "ferplus"
MANIFEST8 = WS / "data" / "ferplus8.parquet"
MANIFEST7 = WS / "data" / "ferplus7.parquet"
TEACHER_DIR = WS / "runs" / "teacher-resnet18"
LABELS = WS / "labels" / "teacher-resnet18.parquet"

log = logging.getLogger("experiments")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


def fer(*args: Any, logfile: Path | None = None) -> Any:
    """Run ``fer -w WS ARGS`` (one CPU thread); return its parsed ``--json`` output, if asked for.

    stderr (progress, notes) goes to ``logfile``; a non-zero exit raises with the log's tail.
    """
    cmd = [sys.executable, "-m", "fercli", "-w", str(WS), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "120"}
    log.info("$ fer %s", " ".join(map(str, args)))
    logfile = logfile or WS / "logs" / "misc.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "a") as err:
        err.write(f"\n$ {' '.join(cmd)}\n")
        err.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=WS, check=False)
    if proc.returncode != 0:
        tail = logfile.read_text().splitlines()[-5:]
        raise RuntimeError(f"fer {' '.join(map(str, args[:2]))} failed ({proc.returncode}); see {logfile}:\n" + "\n".join(tail))
    return json.loads(proc.stdout) if "--json" in args else None


def write_result(path: Path, data: dict[str, Any]) -> None:
    """Write a result JSON atomically (a study cut short never leaves half a file)."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def read_result(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _process_id(pid: int) -> str:
    """``pid`` plus its start time (from /proc where there is one), so a reused pid is not mistaken
    for the process that wrote a lock."""
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "?"
    return f"{pid} {start}"


def _holder_alive(text: str) -> bool:
    try:
        pid = int(text.split()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return _process_id(pid) == text.strip() or len(text.split()) == 1


@contextlib.contextmanager
def exclusive(name: str, poll: float = 20.0) -> Iterator[None]:
    """Hold ``WS/locks/<name>.lock`` while a run trains, so two scripts started side by side (the
    ablation and the beta sweep share runs) never train the same run twice; a waiting script polls
    until the holder is gone, then re-checks for the result. A lock left by a dead process (or one
    whose pid has since been reused) is taken over.
    """
    lock = WS / "locks" / f"{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                text = lock.read_text()
            except FileNotFoundError:
                continue
            if not _holder_alive(text):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            if not waited:
                log.info("%s: another process (%s) is running it; waiting", name, text.split()[0])
                waited = True
            time.sleep(poll)
            continue
        os.write(fd, _process_id(os.getpid()).encode())
        os.close(fd)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def ensure_dataset() -> None:
    """Import FERPlus (8 and 7 classes, valid renamed test) into the study workspace once."""
    if not FERPLUS.is_dir():
        raise SystemExit(f"{FERPLUS}: FERPlus not found; set FER_SHARED to the folder holding datasets/ferplus")
    WS.mkdir(parents=True, exist_ok=True)
    for classes, dest in ((7, MANIFEST7), (8, MANIFEST8)):  # 8 last: it stays the workspace's dataset
        if not dest.is_file():
            fer("data", "import", "ferplus", FERPLUS, "--classes", classes, "--rename-split", "valid=test",
                "--out", dest, "--json")


def _eval_summary(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("images", "accuracy", "mean_class_accuracy", "macro_f1", "classes", "per_class", "confusion", "votes",
            "temperature", "ece", "nll", "calibration", "tta")
    return {k: report[k] for k in keep if k in report}


def evaluate(model: Path, out: Path, logfile: Path) -> dict[str, Any]:
    """Score ``model`` on FERPlus valid (the manifests' test split): 8 classes, and 7 without contempt."""
    ev8 = fer("eval", MANIFEST8, "--model", model, "--split", "test", "--out", out / "eval8", "--json", logfile=logfile)
    ev7 = fer("eval", MANIFEST7, "--model", model, "--split", "test", "--map", "--out", out / "eval7", "--json",
              logfile=logfile)
    return {"ferplus_valid_8": _eval_summary(ev8), "ferplus_valid_7": _eval_summary(ev7)}


def train_run(exp: str, name: str, seed: int, train_args: Sequence[Any]) -> dict[str, Any]:
    """Train (or resume, or skip) one student run of the protocol and evaluate it; returns its result."""
    dest = RESULTS / exp / f"{name}.json"
    with exclusive(f"{exp}-{name}"):
        done = read_result(dest)
        return done if done is not None else _train_run(exp, name, seed, train_args, dest)


def _train_run(exp: str, name: str, seed: int, train_args: Sequence[Any], dest: Path) -> dict[str, Any]:
    run_dir = WS / "runs" / exp / name
    logfile = WS / "logs" / exp / f"{name}.log"
    args = ["train", MANIFEST8, "--config", PROTOCOL, "--seed", seed, "--out", run_dir, *train_args, "--json"]
    if (run_dir / "last.pt").is_file():
        args.append("--resume")
    t0 = time.time()
    summary = fer(*args, logfile=logfile)
    if summary.get("stopped_at_step") is not None:
        raise RuntimeError(f"{run_dir}: stopped early; rerun to resume")
    result = {
        "experiment": exp, "run": name, "seed": seed,
        "command": "fer train " + " ".join(str(a) for a in args[1:] if a != "--json"),
        "protocol": PROTOCOL.relative_to(ROOT).as_posix(),
        "train": {k: summary[k] for k in ("targets", "epochs_run", "best_epoch", "best_val_acc", "history")},
        "train_seconds": round(sum(r["seconds"] for r in summary["history"]), 1),
        "wall_seconds_this_session": round(time.time() - t0, 1),
        **evaluate(run_dir / "best.pt", run_dir, logfile),
    }
    write_result(dest, result)
    log.info("%s/%s: holdout %.4f, FERPlus valid %.4f (8) %.4f (7)", exp, name, result["train"]["best_val_acc"],
             result["ferplus_valid_8"]["accuracy"], result["ferplus_valid_7"]["accuracy"])
    return result


def teacher() -> dict[str, Any]:
    """The ResNet-18 teacher of the protocol and its label distributions (shared by all experiments)."""
    with exclusive("teacher"):
        return _teacher()


def _teacher() -> dict[str, Any]:
    dest = RESULTS / "teacher.json"
    done = read_result(dest)
    if done is not None and LABELS.is_file():
        return done
    logfile = WS / "logs" / "teacher.log"
    args = ["pretrain-teacher", MANIFEST8, "--config", PROTOCOL, "--seed", 0, "--out", TEACHER_DIR, "--json"]
    if (TEACHER_DIR / "last.pt").is_file():
        args.append("--resume")
    summary = fer(*args, logfile=logfile)
    labels = fer("gen-labels", MANIFEST8, "--teacher", TEACHER_DIR / "best.pt", "--out", LABELS, "--json",
                 logfile=logfile)
    result = done or {
        "run": "teacher-resnet18",
        "command": "fer " + " ".join(str(a) for a in args if a != "--json"),
        "train": {k: summary[k] for k in ("epochs_run", "best_epoch", "best_val_acc", "history")},
        "train_seconds": round(sum(r["seconds"] for r in summary["history"]), 1),
        "gen_labels": labels,
        **evaluate(TEACHER_DIR / "best.pt", TEACHER_DIR, logfile),
    }
    write_result(dest, result)
    return result


def teacher_task() -> Task:
    return Task("teacher", teacher)


@dataclass
class Task:
    """One unit of work; ``needs`` names tasks that must have finished first."""

    name: str
    run: Callable[[], Any]
    needs: tuple[str, ...] = ()
    result: Any = field(default=None, repr=False)


def run_tasks(tasks: Sequence[Task], jobs: int) -> dict[str, Any]:
    """Run ``tasks`` on ``jobs`` threads, earliest-listed ready task first; returns results by name.

    A failed task is logged and its dependants are skipped; the others go on.
    """
    pending = list(tasks)
    done: dict[str, Any] = {}
    failed: set[str] = set()
    cond = threading.Condition()

    def worker() -> None:
        while True:
            with cond:
                while True:
                    for t in pending:
                        if set(t.needs) & failed:
                            pending.remove(t)
                            failed.add(t.name)
                            log.error("%s: skipped, it needs %s", t.name, ", ".join(set(t.needs) & failed))
                            cond.notify_all()
                            break
                    else:
                        ready = [t for t in pending if set(t.needs) <= set(done)]
                        if ready or not pending:
                            break
                        cond.wait()
                        continue
                if not pending:
                    return
                task = ready[0]
                pending.remove(task)
            try:
                value = task.run()
            except Exception as exc:  # noqa: BLE001 - one failed run must not stop the study
                log.error("%s failed: %s", task.name, exc)
                with cond:
                    failed.add(task.name)
                    cond.notify_all()
                continue
            with cond:
                done[task.name] = value
                cond.notify_all()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, jobs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failed:
        log.error("failed or skipped: %s", ", ".join(sorted(failed)))
    return done


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one CPU thread each (default 2)")
    return p


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    sd = (sum((v - m) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return m, sd
