"""Typer commands: each parses and validates options, builds a config, calls one core function
and renders the result. Shared UI helpers live in :mod:`fercli.commands._ui`, the options several
commands share in :mod:`fercli.commands._options`; :data:`fercli.cli.COMMANDS` names each command's function."""
