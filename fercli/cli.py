"""The `fer` command: one Typer app, one subcommand per pipeline stage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import typer

from fercli import __version__
from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.commands import align as align_cmd
from fercli.commands import bench as bench_cmd
from fercli.commands import calibrate as calibrate_cmd
from fercli.commands import data as data_cmd
from fercli.commands import demo as demo_cmd
from fercli.commands import doctor as doctor_cmd
from fercli.commands import eval as eval_cmd
from fercli.commands import export as export_cmd
from fercli.commands import gen_labels as gen_labels_cmd
from fercli.commands import predict as predict_cmd
from fercli.commands import serve as serve_cmd
from fercli.commands import status as status_cmd
from fercli.commands import train as train_cmd
from fercli.errors import FerError
from fercli.workspace import ENV_VAR


class _FerGroup(_o.FerGroup):
    """Turns a :class:`FerError` from any (sub)command into one line on stderr and exit code 1."""

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except FerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="fer",
    cls=_FerGroup,
    help="Lightweight facial expression recognition (LFER-LDL), one command per pipeline stage.\n\n"
    "Stages pass artifacts through the workspace (the current directory, --workspace or $FER_WORKSPACE): "
    "with no paths, each stage finds its inputs where the previous one left them.",
    epilog="Example:  fer data import ferplus ~/datasets/ferplus && fer data info && fer status",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fercli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    workspace: Optional[str] = typer.Option(
        None, "--workspace", "-w", envvar=ENV_VAR, help="Workspace directory (default: the current directory)."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only results and errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    _ui.setup_logging(verbose, quiet)
    ctx.obj = _ui.State(workspace=workspace, quiet=quiet)


# Command name -> (its function, the examples under its --help), in pipeline order as `fer --help` lists
# them. Each command lives in the fercli.commands module of its name (pretrain-teacher beside train in
# commands/train.py); that module imports its stage's core module (fercli.align, fercli.training,
# fercli.gen_labels, fercli.calibration, fercli.evaluation, ...) only when the command runs.
COMMANDS: dict[str, tuple[Callable[..., None], str]] = {
    "align": (align_cmd.align, align_cmd.EXAMPLE),
    "pretrain-teacher": (train_cmd.pretrain_teacher, train_cmd.TEACHER_EXAMPLE),
    "gen-labels": (gen_labels_cmd.gen_labels, gen_labels_cmd.EXAMPLE),
    "train": (train_cmd.train, train_cmd.TRAIN_EXAMPLE),
    "calibrate": (calibrate_cmd.calibrate, calibrate_cmd.EXAMPLE),
    "eval": (eval_cmd.eval_, eval_cmd.EXAMPLE),
    "bench": (bench_cmd.bench, bench_cmd.EXAMPLE),
    "export": (export_cmd.export, export_cmd.EXAMPLE),
    "predict": (predict_cmd.predict, predict_cmd.EXAMPLE),
    "serve": (serve_cmd.serve, serve_cmd.EXAMPLE),
    "doctor": (doctor_cmd.doctor, doctor_cmd.EXAMPLE),
    "status": (status_cmd.status, status_cmd.EXAMPLE),
    "demo": (demo_cmd.demo, demo_cmd.EXAMPLE),
}
app.add_typer(data_cmd.app, name="data")  # `fer data import` and `fer data info`
for _name, (_function, _example) in COMMANDS.items():
    app.command(_name, epilog=_example, cls=_o.FerCommand)(_function)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
