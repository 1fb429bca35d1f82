"""`fer doctor`: versions, threads, CUDA, cached weights and missing parts, each with its fix."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from fercli import doctor as core
from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.errors import FerError

EXAMPLE = """Examples:

  fer doctor

  fer doctor --json > doctor.json
"""

_STYLE = {"ok": "green", "missing": "yellow", "warning": "red"}


def doctor(
    ctx: typer.Context,
    json_out: bool = _o.json_flag("report"),
) -> None:
    """Check the installation: package versions, threads, CUDA, face-detector and ImageNet weights in torch's
    hub cache, the workspace; each problem with the one command that fixes it.

    Exits with 0 when only optional parts are missing, 1 when a required package is missing or unusable.
    """
    # A workspace that cannot be found (a file given as --workspace) is one of the things to report.
    try:
        ws, ws_error = _ui.state(ctx).workspace, None
    except FerError as exc:
        ws, ws_error = None, str(exc)
    report = core.run_doctor(ws, ws_error)
    if json_out:
        _ui.print_json(report.to_dict())
    else:
        _render(report)
    if not report.ok:
        raise typer.Exit(1)


def _render(report: core.DoctorResult) -> None:
    table = Table(title="fer doctor", show_lines=False)
    for col in ("check", "status", "found", "fix / note"):
        table.add_column(col, overflow="fold")
    for i, (section, title) in enumerate(core.SECTIONS.items()):
        rows = report.section(section)
        if not rows:
            continue
        if i:
            table.add_section()
        table.add_row(f"[bold]{escape(title)}[/]", "", "", "")
        for c in rows:
            status = f"[{_STYLE[c.status]}]{c.status}[/]" + (" (required)" if c.blocking else "")
            # Paths and versions are data, not markup: escape them (a path may hold "[").
            action = f"[bold]{escape(c.fix)}[/]" + (f"  [dim]{escape(c.note)}[/]" if c.note else "") if c.fix \
                else f"[dim]{escape(c.note)}[/]"
            table.add_row(f"  {escape(c.name)}", status, escape(c.value), action)
    _ui.out.print(table)
    counts = report.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    if not report.ok:
        _ui.out.print(f"[red]{summary}: a required part is missing or unusable; run the fixes marked (required)[/]")
    elif counts["missing"] or counts["warning"]:
        _ui.out.print(f"{summary}: only optional parts need attention; the fix column says how")
    else:
        _ui.out.print(f"[green]{summary}: everything is in place[/]")
