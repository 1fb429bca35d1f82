"""Start-up time of the commands a user types first (issue 14, item 11), against `python -c pass`.

    .venv/bin/python benchmarks/bench_startup.py                  # 7 rounds, every command
    .venv/bin/python benchmarks/bench_startup.py --rounds 11 --json startup.json

Each command runs as a fresh process, as a user runs it: `fer --help`, `fer status`, `fer data info`
and `fer X --help` for every command. `fer status` and `fer data info` run in a small workspace made
first (a photo folder of 70 drawn faces imported with `fer data import folder`), so they read a real
manifest. All commands and the `python -c pass` baseline are timed interleaved, round by round, so
a busy machine slows them alike; the table gives the median wall time of each, the time above the
bare interpreter, and the 0.6 s target (exit status 1 if a median misses it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.6


def fer_command() -> list[str]:
    script = Path(sys.executable).with_name("fer")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "fercli"]


def commands() -> list[list[str]]:
    import typer

    from fercli.cli import app

    out = [["--help"], ["status"], ["data", "info"]]
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += [[name, sub, "--help"] for sub in cmd.commands]
        else:
            out.append([name, "--help"])
    return out


def make_workspace(root: Path) -> None:
    """A workspace holding one small dataset (so status and data info have something to read)."""
    import cv2
    import numpy as np

    from fercli.synthetic import EXPRESSIONS, draw_face

    rng = np.random.default_rng(0)
    for name in EXPRESSIONS:
        (root / "raw" / name).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            cv2.imwrite(str(root / "raw" / name / f"{i}.png"), cv2.resize(draw_face(name, rng)[0], (48, 48)))
    subprocess.run([*fer_command(), "-q", "data", "import", "folder", "raw"], cwd=root, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*fer_command(), "status"], cwd=root, check=True, stdout=subprocess.DEVNULL)  # as a user would


def time_once(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {proc.returncode}")
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="timed runs of each command (the median is reported)")
    ap.add_argument("--json", help="also write every timing to this file")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="fer-startup-"))
    try:
        make_workspace(root)
        env = {k: v for k, v in os.environ.items() if k != "FER_WORKSPACE"}
        env["COLUMNS"] = "100"
        runs = {"python -c pass": [sys.executable, "-c", "pass"]}
        runs.update({"fer " + " ".join(c): [*fer_command(), *c] for c in commands()})
        times: dict[str, list[float]] = {name: [] for name in runs}
        for name, argv in runs.items():  # warm the file cache (and Python's bytecode cache) once
            time_once(argv, root, env)
        for _ in range(args.rounds):
            for name, argv in runs.items():
                times[name].append(time_once(argv, root, env))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = statistics.median(times["python -c pass"])
    print(f"start-up, median of {args.rounds} interleaved runs ({os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]})")
    print(f"| command | median s | above `python -c pass` s | under {TARGET_S} s |")
    print("|---|---:|---:|---|")
    ok = True
    for name, values in times.items():
        med = statistics.median(values)
        good = med < TARGET_S
        ok &= good or name == "python -c pass"
        print(f"| `{name}` | {med:.3f} | {med - base:+.3f} | {'yes' if good else 'NO'} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": args.rounds, "times": times}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
