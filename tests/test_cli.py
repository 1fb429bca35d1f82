"""`fer` through Typer's CliRunner: version, help examples, data import/info, status, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from _fab import make_ferplus, make_rafdb

from fercli import __version__
from fercli.cli import app

VOTES = [[6, 0, 1, 1, 0, 0, 0, 0, 2, 0], [0, 9, 0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0, 0, 0, 7, 2]]


def leaf_commands(group=None, prefix=()):
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from leaf_commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,)


def test_version(runner):
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"fercli {__version__}"


@pytest.mark.parametrize("command", sorted(leaf_commands()), ids=" ".join)
def test_every_command_help_shows_a_real_example(runner, command):
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Example" in res.stdout and f"fer {' '.join(command)}" in res.stdout


def test_top_level_help(runner):
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "workspace" in res.stdout and "data" in res.stdout


def test_import_info_status_in_a_workspace(runner, workspace: Path, tmp_path: Path):
    src = make_ferplus(tmp_path / "ferplus", {"FER2013Train": [(f"fer{i:07d}.png", VOTES[i % 3]) for i in range(6)],
                                               "FER2013Valid": [("fer0000100.png", VOTES[1])]})
    res = runner.invoke(app, ["data", "import", "ferplus", str(src)])
    assert res.exit_code == 0, res.output
    assert "wrote data/manifest.parquet" in res.stdout and "train" in res.stdout

    res = runner.invoke(app, ["data", "info", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert "using dataset (workspace): data/manifest.parquet" in res.stderr
    assert info["rows"] == 7 and info["counts"]["train"]["neutral"] == 2 and info["counts"]["train"]["happiness"] == 2
    assert info["splits"]["train"]["unlabelled"] == 2 and info["missing_files"] == 0
    assert info["distributions"] and "unknown" in info["vote_columns"]

    (src / "FER2013Train" / "fer0000000.png").unlink()
    res = runner.invoke(app, ["data", "info"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "missing image files: 1" in res.stdout and "imbalance" in res.stdout

    res = runner.invoke(app, ["status", "--json"])
    st = json.loads(res.stdout)
    assert st["artifacts"][0]["state"] == "ok" and st["next"] == "fer pretrain-teacher"
    res = runner.invoke(app, ["status"], env={"COLUMNS": "200"})
    assert "next: fer pretrain-teacher" in res.stdout


def test_import_with_config_file_and_json(runner, workspace: Path, tmp_path: Path):
    src = make_rafdb(tmp_path / "raf", [("train_00001.jpg", 4), ("test_0001.jpg", 6)])
    (workspace / "fer.toml").write_text('[import]\nclasses = 8\nout = "raf.parquet"\n')
    res = runner.invoke(app, ["data", "import", "auto", str(src), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["format"] == "rafdb" and len(summary["classes"]) == 8 and summary["out"] == "raf.parquet"
    assert (workspace / "raf.parquet").is_file()


def test_a_bad_value_from_the_workspace_config_names_the_file(runner, workspace: Path):
    """The flag alone would send the user looking at a command line they never typed."""
    (workspace / "fer.toml").write_text("[train]\nlr = -1\n")
    res = runner.invoke(app, ["train"])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1
    assert "--lr -1.0 is out of range" in res.stderr and "set by 'lr' in " in res.stderr
    assert "fer.toml [train]: fix it there, or pass --lr to override" in res.stderr
    res = runner.invoke(app, ["train", "--lr", "-2"])  # from the command line: the flag is the place
    assert res.exit_code == 1 and "fer.toml" not in res.stderr


@pytest.mark.parametrize("args, message", [
    (["data", "import", "ferplus", "missing_dir"], "missing_dir: no such file or directory"),
    (["data", "import", "ferplus", "."], "no FER2013Train/label.csv"),
    (["data", "import", "ferplus", ".", "--classes", "6"], "--classes must be 7 or 8"),
    (["data", "info"], "no dataset in workspace"),
    (["data", "info", "nope.parquet"], "nope.parquet: no such file"),
])
def test_errors_are_one_line_with_exit_code_1(runner, workspace: Path, args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (workspace / "data").exists()  # no partial output
