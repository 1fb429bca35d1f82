"""Facts written twice on purpose, pinned: the defaults `--help` states against the stage dataclasses
(the commands cannot import those at start-up: they import torch), the β of the pipeline's and the
demo's `fer train` against TrainConfig, and `fer doctor`'s package list against pyproject.toml."""

from __future__ import annotations

import dataclasses
import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import typer.main

from fercli.cli import app

REPO = Path(__file__).resolve().parents[1]

# Command -> its stage's config dataclass.
CONFIGS = {
    ("align",): "fercli.align.config:AlignConfig",
    ("pretrain-teacher",): "fercli.training:TeacherConfig",
    ("gen-labels",): "fercli.gen_labels:GenLabelsConfig",
    ("train",): "fercli.training:TrainConfig",
    ("calibrate",): "fercli.calibration:CalibrateConfig",
    ("eval",): "fercli.evaluation:EvalConfig",
    ("bench",): "fercli.bench:BenchConfig",
    ("export",): "fercli.export:ExportConfig",
    ("predict",): "fercli.predict:PredictConfig",
    ("serve",): "fercli.serve:ServeConfig",
    ("demo",): "fercli.demo:DemoConfig",
    ("data", "import"): "fercli.importers:ImportConfig",
}
# Parameters whose config field has another name (the commands pass them renamed to build_config).
RENAMED = {"ckpt": "model", "map_": "map", "timeout": "timeout_s", "classes": "num_classes", "size": "sizes",
           "batch": "batches", "backend": "backends", "rename_split": "rename_splits"}
# Defaults the help spells like values but that are not one field's default: they say what happens
# when the field is left unset (None or empty), which the stage decides.
NOT_FIELD_DEFAULTS = {
    (("bench",), "device"): "cpu, plus cuda when present",
    (("eval",), "corruptions"): "all",
    (("export",), "min_agreement"): "int8 0.95, int8-dynamic 0.90, fp16 0.99",
    (("predict",), "inputs"): "0",  # --webcam's camera index
}

_STATED = (
    re.compile(r"\\?\[default: ([^\]]+)\]"),  # [default: 224]
    re.compile(r"\(default: ([^)]+)\)"),  # (default: train)
    re.compile(r"([\w-]+) \(default\)"),  # all (default), largest or best
    re.compile(r"\((-?\d[\w.+-]*)(?:;[^)]*)?\)"),  # (0.8), (0.2; 0.6 for AffectNet)
)
_VALUE = re.compile(r"^[a-z0-9][\w./+-]*(?:(?:,\s*|\s+and\s+|\s+)[a-z0-9][\w./+-]*)*$")  # not prose


def stated_defaults(help_text: str) -> list[str]:
    """The defaults a help text states as values (prose such as "the workspace's dataset" is left out)."""
    found = [m.group(1).strip() for rx in _STATED for m in rx.finditer(help_text)]
    return [v for v in found if _VALUE.match(v)]


def agrees(text: str, default: Any, param: click.Parameter) -> bool:
    if isinstance(default, bool):  # --show/--headless: the help names the flag that is in force
        names = param.opts if default else getattr(param, "secondary_opts", [])
        return f"--{text}" in names
    if isinstance(default, (tuple, list)):
        parts = [p for p in re.split(r",\s*|\s+and\s+|\s+", text) if p]
        return len(parts) == len(default) and all(agrees(p, d, param) for p, d in zip(parts, default))
    if isinstance(default, (int, float)):
        try:
            return float(text) == float(default)
        except ValueError:
            return False
    return default is not None and text == str(default)


def mismatches(command: click.Command, cls: type, key: tuple[str, ...] = ()) -> tuple[list[str], int]:
    """(every stated default that disagrees with ``cls``'s field default, how many agree)."""
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else
                         f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                for f in dataclasses.fields(cls)}
    bad, good = [], 0
    for param in command.params:
        for text in stated_defaults(getattr(param, "help", None) or ""):
            if NOT_FIELD_DEFAULTS.get((key, param.name)) == text:
                continue
            field = param.name if param.name in defaults else RENAMED.get(param.name, param.name)
            if field not in defaults:
                bad.append(f"{param.name}: states {text!r} but {cls.__name__} has no field {field!r}")
            elif agrees(text, defaults[field], param):
                good += 1
            else:
                bad.append(f"{param.name}: help says {text!r}, {cls.__name__}.{field} defaults to {defaults[field]!r}")
    return bad, good


def _command(path: tuple[str, ...]) -> click.Command:
    cmd: Any = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _config(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def test_every_command_with_options_has_its_config_here():
    cli = typer.main.get_command(app)
    leaves = {(n,) for n, c in cli.commands.items() if not hasattr(c, "commands")}
    leaves |= {("data", n) for n in cli.commands["data"].commands}
    without_config = {("doctor",), ("status",), ("data", "info")}  # options: --json (and --check-files) only
    assert leaves - without_config == set(CONFIGS)


@pytest.mark.parametrize("path", sorted(CONFIGS), ids=" ".join)
def test_help_defaults_are_the_dataclass_defaults(path):
    bad, _ = mismatches(_command(path), _config(CONFIGS[path]), path)
    assert not bad, bad


def test_the_help_defaults_are_really_checked():
    counted = sum(mismatches(_command(p), _config(s), p)[1] for p, s in CONFIGS.items())
    assert counted >= 60, counted  # a regex that silently stopped matching would pass the test above

    @dataclasses.dataclass
    class Cfg:
        size: int = 224
        split: str = "test"
        sizes: tuple[int, ...] = (1, 32)
        show: bool = False

    fake = typer.Typer()

    @fake.command()
    def cmd(size: int = typer.Option(0, help="Crop size (112)."),
            split: str = typer.Option("", help="A split \\[default: valid]."),
            batch: str = typer.Option("", help="Batches \\[default: 1 and 64]."),
            show: bool = typer.Option(False, "--show/--headless", help="Window \\[default: show].")) -> None: ...

    bad, good = mismatches(typer.main.get_command(fake), Cfg)
    assert len(bad) == 4 and good == 0, bad


def test_stated_defaults_skip_prose():
    assert stated_defaults("Manifest \\[default: the workspace's dataset].") == []
    assert stated_defaults("Run directory \\[default: WORKSPACE/student].") == []
    assert stated_defaults("Combo loss: FP/FN balance (0.2; 0.6 for AffectNet).") == ["0.2"]
    assert stated_defaults("all (default), largest or best.") == ["all"]


def test_beta_of_the_pipeline_the_demo_and_the_help_is_the_training_default():
    from fercli.commands.train import OPTIONS, TRAIN_EXAMPLE
    from fercli.demo import _paper_beta
    from fercli.pipeline import STAGES
    from fercli.training import RECIPES, TrainConfig

    default, affectnet = f"{TrainConfig().beta:g}", f"{RECIPES['affectnet']['beta']:g}"
    assert STAGES["student"].command == f"fer train --beta {default}"
    assert f"fer train --beta {default} " in TRAIN_EXAMPLE
    assert _paper_beta(None) == _paper_beta("rafdb") == default and _paper_beta("affectnet") == affectnet
    help_text = typer.main.get_command(app).commands["train"].params  # the --beta row of OPTIONS
    beta = next(p for p in help_text if p.name == "beta")
    assert f"({default}; {affectnet} for AffectNet)" in beta.help
    assert "beta" in OPTIONS


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_doctor_packages_are_pyprojects_requirements():
    """doctor.PACKAGES restates pyproject.toml's ranges (an installed fercli's metadata is not always
    there to read them from): each must be a requirement of pyproject.toml, spelled the same."""
    from fercli.doctor import PACKAGES

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [s for extra in project["optional-dependencies"].values() for s in extra]
    by_name = {_requirement_name(s): s for s in specs}
    for pkg in PACKAGES:
        assert pkg.spec in specs, f"doctor.PACKAGES {pkg.name}: {pkg.spec!r} is not in pyproject.toml ({by_name.get(_requirement_name(pkg.spec))!r})"
        assert _requirement_name(pkg.spec) == pkg.dists[0].lower(), pkg
    # Dependencies the doctor does not report (one command's extras, checked when it runs): listed, so a
    # new dependency is a decision, not an omission.
    unchecked = {"fastapi", "uvicorn", "python-multipart", "prometheus-client", "trackers"}
    checked = {_requirement_name(p.spec) for p in PACKAGES}
    assert {_requirement_name(s) for s in project["dependencies"]} - checked == unchecked


def test_given_takes_the_fields_and_the_renamed():
    from fercli.commands._options import given

    @dataclasses.dataclass
    class Cfg:
        model: str | None = None
        split: str = "test"

    assert given(Cfg, {"ctx": object(), "ckpt": "a.pt", "split": None, "json_out": True}, model="a.pt") == \
        {"split": None, "model": "a.pt"}


def _all_help_paths() -> list[tuple[str, ...]]:
    """`fer`, every command and group, and every command of a group, as argument paths."""
    cli = typer.main.get_command(app)
    paths: list[tuple[str, ...]] = [()]
    for name, cmd in cli.commands.items():
        paths.append((name,))
        paths += [(name, sub) for sub in getattr(cmd, "commands", {})]
    return paths


# What typer prints beside a name when no metavar is set: the Python type in angle brackets (`<bool>`
# beside flags, which take no value; `<int>` beside the -v count; `<list[str]>` beside arguments).
_TYPE_NOISE = re.compile(r"<(?:bool|int|float|str|path|file|dir|list\[[^\]]*\]|tuple|datetime)[^>]*>")


@pytest.mark.parametrize("path", _all_help_paths(), ids=lambda p: " ".join(p) or "fer")
def test_help_shows_no_python_types_and_no_placeholder_beside_flags(path):
    from typer.core import TyperArgument, TyperOption
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    assert not _TYPE_NOISE.findall(res.output), (path, _TYPE_NOISE.findall(res.output))
    cmd: Any = _command(path)
    flags = [p for p in cmd.get_params(cmd.make_context("fer", ["--help"], resilient_parsing=True))
             if isinstance(p, TyperOption) and (p.is_flag or p.count)]
    assert flags  # --help at least
    rows = [line.strip("│ ").split() for line in res.output.splitlines()]
    for flag in flags:  # the flag's row: its names, then straight on to its help text (no metavar)
        names = [*flag.opts, *flag.secondary_opts]
        row = next(r for r in rows if r and r[0] in names)
        after = [w for w in row if w not in names]
        assert after and not (after[0].isupper() and len(after[0]) > 1), (path, names, " ".join(row))
    for arg in (p for p in cmd.params if isinstance(p, TyperArgument)):  # arguments in capitals, as in the README
        assert (arg.name or "").upper() in res.output, (path, arg.name)


# ---- a bad option is refused before the stage (torch, OpenCV, pandas) is imported --------------------
HEAVY = ("torch", "torchvision", "cv2", "pandas", "onnxruntime")
# Command -> (a bad option, the one-line error it gets). A file or folder named FILE/DIR is made first.
BAD_OPTIONS = {
    ("align",): (["SRC", "DST", "--min-score", "2"], "--min-score must be in [0, 1), got 2.0"),
    ("pretrain-teacher",): (["--ema", "2"], "--ema 2.0 is out of range: it must be in (0, 1), e.g. 0.999"),
    ("gen-labels",): (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("train",): (["--ema", "2"], "--ema 2.0 is out of range: it must be in (0, 1), e.g. 0.999"),
    ("calibrate",): (["FILE", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("eval",): (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("bench",): (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
    ("export",): (["--format", "foo"], "--format must be one of onnx, torchscript, checkpoint, got 'foo'"),
    ("predict",): (["FILE", "--every", "0"], "--every must be >= 1, got 0"),
    ("serve",): (["--port", "-1"], "--port must be in 0..65535, got -1"),
    ("demo",): (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    ("data", "import"): (["folder", "DIR", "--classes", "9"], "--classes must be 7 or 8, got 9"),
}
_RUN_CLI = """
import sys
from fercli.cli import main
sys.argv = ["fer", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print("heavy:", ",".join(m for m in {heavy!r} if m in sys.modules), "exit:", code)
"""


def test_bad_options_cover_every_command_with_a_config():
    assert set(BAD_OPTIONS) == set(CONFIGS)


@pytest.mark.parametrize("path", sorted(BAD_OPTIONS), ids=" ".join)
def test_a_bad_option_is_refused_without_importing_the_stage(path, tmp_path):
    """Every command builds and validates its config (build_config -> validate_config) before it imports
    its stage: a bad value is one line in a fraction of a second, not after torch, OpenCV and pandas."""
    import os
    import subprocess
    import sys

    args, message = BAD_OPTIONS[path]
    (tmp_path / "FILE").write_bytes(b"x")
    (tmp_path / "DIR").mkdir()
    argv = [str(tmp_path / a) if a in ("FILE", "DIR") else a for a in args]
    env = {**os.environ, "FER_WORKSPACE": str(tmp_path / "ws"), "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", _RUN_CLI.format(heavy=HEAVY), *path, *argv], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=120)
    assert res.stderr.strip().splitlines()[-1:] == [f"error: {message}"], res.stderr
    assert res.stdout.strip().splitlines()[-1] == "heavy:  exit: 1", res.stdout
