"""`fer data import` and `fer data info`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.config import build_config
# fercli.importers.FORMATS (a test checks they agree), declared light so `fer data --help` imports no pandas.
from fercli.stage_configs import IMPORT_FORMATS as FORMATS

app = typer.Typer(help="Import datasets into manifests and inspect them.", no_args_is_help=True, rich_markup_mode="rich",
                  cls=_o.FerGroup)

IMPORT_EXAMPLE = """Examples:

  fer data import ferplus ~/datasets/ferplus               

  fer data import affectnet ~/AffectNet --classes 7 --out affectnet7.parquet

  fer data import fer2013 fer2013.csv --images-dir fer2013_png

  fer data import folder my_faces/

  fer data import ferplus ~/datasets/ferplus --rename-split valid=test   # report on valid, select on a holdout
"""
INFO_EXAMPLE = """Examples:

  fer data info                            # the workspace's current dataset

  fer data info data/manifest.parquet --json
"""


@app.command("import", epilog=IMPORT_EXAMPLE, cls=_o.FerCommand)
def import_(
    ctx: typer.Context,
    format: str = typer.Argument(..., help=f"Dataset format: {', '.join(FORMATS)}, or auto (detect from the layout)."),
    src: Path = typer.Argument(..., help="Dataset root (or fer2013.csv)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Manifest to write \\[default: WORKSPACE/data/manifest.parquet]."),
    classes: Optional[int] = typer.Option(None, "--classes", help="7 (basic) or 8 (with contempt) \\[default: the dataset's own]."),
    images: Optional[str] = typer.Option(None, "--images", help="rafdb: aligned, original or auto."),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", help="fer2013: where to write the PNG images."),
    allow_missing: Optional[bool] = typer.Option(None, "--allow-missing", help="Drop rows whose image is absent instead of failing."),
    rename_split: Optional[str] = typer.Option(None, "--rename-split", help="OLD=NEW\\[,...]: e.g. valid=test keeps FERPlus valid out of model selection (train with --val-fraction)."),
    split_fractions: _o.SplitFractions = None,
    no_split: _o.NoSplit = None,
    config: Optional[Path] = _o.config_file("import", "an", these=True),
    json_out: bool = _o.json_flag("summary"),
) -> None:
    """Turn a dataset (RAF-DB, AffectNet, FERPlus, FER2013 or class folders) into a manifest.

    The manifest becomes the workspace's current dataset for later stages.
    """
    from fercli.stage_configs import ImportConfig  # light: the importers (pandas) come after validation

    st = _ui.state(ctx)
    ws = st.workspace
    cfg = build_config(ImportConfig, "import", _o.given(ImportConfig, locals(), rename_splits=rename_split),
                       workspace=ws, config_file=config)
    from fercli.importers import run_import

    result = run_import(cfg, ws, track=_ui.rich_track, command="fer " + " ".join(sys.argv[1:]))
    summary = result.summary()
    if json_out:
        _ui.print_json(summary)
        return
    table = Table(title=f"{summary['format']}: {summary['rows']:,} rows, {len(summary['classes'])} classes")
    table.add_column("split")
    table.add_column("rows", justify="right")
    table.add_column("labelled", justify="right")
    df = result.manifest.df
    for split, n in summary["splits"].items():
        table.add_row(split, f"{n:,}", f"{int(((df['split'] == split) & (df['label'] >= 0)).sum()):,}")
    _ui.out.print(table)
    for reason, n in summary["dropped"].items():
        _ui.out.print(f"dropped {n:,} rows: {reason}")
    for note in summary["notes"]:
        _ui.out.print(note)
    _ui.out.print(f"wrote {ws.rel(result.out)} (images under {result.manifest.root}); it is now the workspace's dataset")


@app.command("info", epilog=INFO_EXAMPLE, cls=_o.FerCommand)
def info(
    ctx: typer.Context,
    manifest: Optional[Path] = typer.Argument(None, help="Manifest parquet \\[default: the workspace's dataset]."),
    check_files: bool = typer.Option(True, "--check-files/--no-check-files", help="Count rows whose image file is missing."),
    json_out: bool = _o.json_flag("report"),
) -> None:
    """Counts per split and class, imbalance, unlabelled rows, missing files, distribution columns."""
    from fercli.manifest_info import read_info

    ws = _ui.state(ctx).workspace
    art = ws.resolve("dataset", manifest)
    _ui.using(ctx, ws, art)
    rep = read_info(art.path, check_files=check_files, track=_ui.rich_track)
    if json_out:
        _ui.print_json(rep)
        return
    splits = list(rep["counts"])
    table = Table(title=f"{ws.rel(art.path)}: {rep['rows']:,} rows ({rep['dataset'] or 'unknown source'})")
    table.add_column("class")
    for s in splits:
        table.add_column(s, justify="right")
    for c in rep["classes"]:
        table.add_row(c, *(f"{rep['counts'][s][c]:,}" for s in splits))
    table.add_section()
    table.add_row("[dim]unlabelled[/]", *(f"{rep['splits'][s]['unlabelled']:,}" for s in splits))
    table.add_row("[bold]labelled[/]", *(f"{rep['splits'][s]['labelled']:,}" for s in splits))
    table.add_row("[bold]rows[/]", *(f"{rep['splits'][s]['rows']:,}" for s in splits))
    table.add_row("imbalance (max/min)", *(str(rep["splits"][s]["imbalance"] or "-") for s in splits))
    _ui.out.print(table)
    missing = rep["missing_files"]
    lines = [
        f"image root: {rep['root']}" + ("" if rep["root_exists"] else "  [red](missing)[/]"),
        "missing image files: " + ("not checked" if missing is None else f"{missing:,}" + (f" (e.g. {', '.join(rep['missing_examples'])})" if missing else "")),
        *([f"alignment status: {', '.join(f'{k} {v:,}' for k, v in rep['status'].items())} (only ok rows are used)"]
          if rep["status"] else []),
        "label distributions: " + (f"yes ({rep['distribution_rows']:,} rows)" if rep["distributions"] else "no"),
        "vote columns: " + (", ".join(rep["vote_columns"]) or "none"),
        "other columns: " + (", ".join(k for k, v in rep["optional_columns"].items() if v) or "none"),
    ]
    for s in splits:
        if rep["splits"][s]["empty_classes"]:
            lines.append(f"[yellow]{s}: no images of {', '.join(rep['splits'][s]['empty_classes'])}[/]")
    for line in lines:
        _ui.out.print(line)
