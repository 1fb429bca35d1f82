"""`fer status`: which artifacts the workspace holds, from what, and which stage comes next."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.pipeline import STAGES
from fercli.status import status_report
from fercli.workspace import format_summary

EXAMPLE = """Examples:

  fer status

  fer -w runs/ferplus status --json
"""


def status(
    ctx: typer.Context,
    json_out: bool = _o.json_flag("status"),
) -> None:
    """Show the workspace: each artifact, when and from what it was made, stale or not, and what to run next."""
    ws = _ui.state(ctx).workspace
    rep = status_report(ws)
    if json_out:
        _ui.print_json(rep)
        return
    table = Table(title=f"workspace {rep['workspace']}" + (f" (config {rep['config']})" if rep["config"] else ""))
    for col in ("artifact", "path", "state", "made", "from", "key figures"):
        table.add_column(col)
    style = {"ok": "green", "stale": "yellow", "missing": "dim", "unreadable": "red"}
    for row in rep["artifacts"]:
        table.add_row(
            row["kind"],
            row["path"] or "-",
            f"[{style[row['state']]}]{row['state']}[/]",
            (row.get("created") or "-")[:16].replace("T", " "),
            ", ".join(k if k in STAGES else Path(str(v)).name for k, v in (row.get("inputs") or {}).items()) or "-",
            format_summary(row.get("summary") or {}) or ("see below" if row.get("problem") else "-"),
        )
    _ui.out.print(table)
    for row in rep["artifacts"]:
        if row.get("problem") and row["state"] != "missing":
            _ui.out.print(f"[yellow]{row['kind']}: {row['problem']}[/]")
    if rep["next"]:
        _ui.out.print(f"next: [bold]{rep['next']}[/]")
        if rep.get("note"):
            _ui.out.print(f"[dim]({rep['note']})[/]")
    else:
        _ui.out.print("every stage is up to date")
