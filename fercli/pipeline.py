"""The pipeline: which stage makes which artifact kind, with which command, from which inputs.

The one registry of stages (:data:`PIPELINE`): `fer status` walks it to suggest the next command,
workspace resolution names the command that makes a missing or stale input, and `fer demo` maps the
commands it runs to the artifacts they leave (:data:`MADE_BY`). Light: no third-party imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: the artifact kind it makes, the command that makes it, what it reads."""

    kind: str
    command: str
    inputs: tuple[str, ...]
    alternative: str = ""  # another command that makes the same kind of artifact

    @property
    def how(self) -> str:
        return f"`{self.command}`" + (f" or `{self.alternative}`" if self.alternative else "")


# In pipeline order; `fer status` suggests the first stage whose artifact is missing or stale.
# The student's --beta is TrainConfig.beta's default (tests/test_options.py pins it).
PIPELINE: tuple[Stage, ...] = (
    Stage("dataset", "fer align SRC aligned/", (), "fer data import FORMAT SRC"),
    Stage("teacher", "fer pretrain-teacher", ("dataset",)),
    Stage("labels", "fer gen-labels", ("dataset", "teacher")),
    Stage("student", "fer train --beta 0.2", ("dataset", "labels")),
    Stage("eval", "fer eval", ("student", "dataset")),
    Stage("export", "fer export", ("student",)),
)
STAGES: dict[str, Stage] = {s.kind: s for s in PIPELINE}


def command_name(command: str) -> str:
    """The subcommand a command line runs: ``fer data import FORMAT SRC`` -> ``data import``,
    ``fer train --beta 0.2`` -> ``train`` (subcommand names are lower case; arguments and options
    are not bare lower-case words)."""
    m = re.match(r"fer((?: [a-z][a-z-]*(?= |$))+)", command)
    return m.group(1).strip() if m else ""


# Subcommand -> the artifact kind it makes (``align`` and ``data import`` both make the dataset).
MADE_BY: dict[str, str] = {command_name(cmd): s.kind for s in PIPELINE for cmd in (s.command, s.alternative) if cmd}
