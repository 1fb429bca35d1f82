"""Typer commands: each parses and validates options, builds a config, calls one core function
and renders the result. Shared UI helpers live in :mod:`fercli.commands._ui`."""
