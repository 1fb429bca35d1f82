"""Options that several commands share, declared once: their flag, type and help text.

A command writes ``device: _o.Device = None``; the alias carries the flag and its help (typer
reads ``Annotated`` metadata). A group of options several commands take together is added by
:func:`with_options` (e.g. :data:`INFERENCE`, :data:`DETECTION`). Help texts spell defaults out instead of reading the
stage dataclasses, whose modules import torch, which `fer --help` must not wait for; every default a
help text states is pinned against its dataclass by tests/test_options.py.

:func:`given` turns a command's parameters into the overrides :func:`fercli.config.build_config`
takes, by the config dataclass's field names, so a command lists only what it renames or reshapes.

Every command and group is built with :class:`FerCommand` / :class:`FerGroup`, which tidy what `--help`
shows beside each name (see :func:`tidy_help`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


def option(typ: Any, *decls: str, help: str, **kwargs: Any) -> Any:
    """``Annotated[Optional[typ], typer.Option(*decls, help=help)]``: an option that is None unless given,
    so the config's own default (or the workspace's config) applies."""
    return Annotated[Optional[typ], typer.Option(*decls, help=help, **kwargs)]


def config_file(section: str, article: str = "a", these: bool = False) -> Any:
    """``--config``: a TOML/YAML file whose ``[section]`` table holds the command's options."""
    table = f"{article} \\[{section}] table" + (" of these options" if these else "")
    return typer.Option(None, "--config", metavar="FILE", help=f"TOML/YAML file with {table}.")


def json_flag(what: str) -> Any:
    """``--json``: print ``what`` (the report, the summary, ...) as JSON instead of tables."""
    return typer.Option(False, "--json", help=f"Print the {what} as JSON.")


DEVICE_HELP = "auto, cpu, cuda, cuda:N."
RUNTIME_HELP = "An exported .onnx model runs on onnxruntime or openvino"

Device = option(str, "--device", metavar="DEVICE", help=DEVICE_HELP)
Threads = option(int, "--threads", metavar="N", help="CPU threads.")
Workers = option(int, "--workers", metavar="N", help="Decoding worker processes.")
BatchSize = option(int, "--batch-size", "-b", metavar="N", help="Inference batch size.")
Cache = option(bool, "--cache/--no-cache", help="Use the decoded image cache.")
Runtime = option(str, "--runtime", metavar="NAME", help=f"{RUNTIME_HELP} (pip install openvino; CPU) \\[default: onnxruntime].")
ServeRuntime = option(str, "--runtime", metavar="NAME", help=f"{RUNTIME_HELP}.")
Model = option(Path, "--model", "-m", metavar="MODEL", help="Checkpoint or export \\[default: the workspace's student, else the bundled model].")
DetectorWeights = option(Path, "--detector-weights", metavar="FILE", help="Detector weights file.")
# Face detection and alignment, as `fer align` and `fer predict` take them (fercli.align.config's defaults).
MinScore = option(float, "--min-score", metavar="SCORE", help="Detection score threshold \\[default: 0.8].")
MinFaceSize = option(float, "--min-face-size", metavar="PX", help="Ignore faces whose box is smaller (source pixels) \\[default: 0].")
AlignSize = option(int, "--size", metavar="PX", help="Crop size in pixels \\[default: 224].")
Margin = option(float, "--margin", metavar="FRACTION", help="Extra context on each side, as a fraction of the face \\[default: 0].")
DetectSize = option(int, "--detect-size", metavar="PX", help="Longest side of the detector's input \\[default: 640].")
# Class folders without split folders: `fer align` and `fer data import` split them alike.
SplitFractions = option(str, "--split-fractions", metavar="TRAIN,VALID,TEST", help="Class folders without train/valid/test folders are split once, "
                        "stratified by class and seeded: TRAIN,VALID,TEST fractions \\[default: 0.8,0.1,0.1].")
NoSplit = option(bool, "--no-split", help="Keep every image of such a folder in train (training then needs --val-fraction).")
Manifest = Annotated[Optional[Path], typer.Argument(help="Dataset manifest \\[default: the workspace's dataset].")]


# Face detection and alignment after --faces, in `fer align` and `fer predict` alike.
DETECTION: dict[str, Any] = {"min_score": MinScore, "min_face_size": MinFaceSize, "size": AlignSize, "margin": Margin,
                             "detect_size": DetectSize}
# What every stage that runs a model over a manifest takes (fer gen-labels, calibrate, eval).
INFERENCE: dict[str, Any] = {"batch_size": BatchSize, "workers": Workers, "cache": Cache, "device": Device}


def with_options(after: str, options: dict[str, Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add ``options`` (name -> annotation, e.g. :data:`INFERENCE`) to a command's parameters after
    ``after``, as ``--help`` lists them; the command receives them in its ``**kwargs``."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        keyword = inspect.Parameter.KEYWORD_ONLY
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
        at = next(i for i, p in enumerate(own) if p.name == after) + 1
        added = [inspect.Parameter(name, keyword, annotation=ann, default=None) for name, ann in options.items()]
        # typer passes every parameter by name: all but the context may be keyword-only, in any order
        params = [own[0], *(p.replace(kind=keyword) for p in own[1:at]), *added, *(p.replace(kind=keyword) for p in own[at:])]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return command

    return decorate


def given(cls: type, params: dict[str, Any], **renamed: Any) -> dict[str, Any]:
    """The overrides for a config dataclass ``cls``: each of ``params`` (a command's ``locals()``) that
    names one of its fields, plus ``renamed`` (fields whose parameter has another name or shape)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return {**{k: v for k, v in params.items() if k in fields}, **renamed}


# --help's placeholder for a value option declared without metavar=, by its value type. Typer prints
# the Python type otherwise (`<str>`, `<list[str]>`), and `<bool>` beside flags, which take no value.
_TYPE_METAVARS: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


class _Argument(TyperArgument):
    """A positional argument as `--help` shows it: its name in capitals (``SRC``, ``INPUTS...``), as the
    README and the usage lines spell them, and no Python type beside it (its help text says what it is)."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else (self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def tidy_help(params: list[Any]) -> list[Any]:
    """Make ``params`` read cleanly in rich `--help` (in place; returns them): flags (``--json``,
    ``--show/--headless``, ``-v`` counts, ``--help``) show no value placeholder, value options without
    a ``metavar=`` get one from their type (``TEXT``, ``INTEGER``, ``NUMBER``, ``PATH``), and
    arguments show their name in capitals without a type."""
    for p in params:
        if isinstance(p, TyperOption):
            if p.is_flag or p.count:
                p.metavar = ""  # empty, not None: None makes typer print the type (`<bool>`, `<int>`)
            elif p.metavar is None:
                ann = p.type_descriptor.annotation
                element = (getattr(ann, "__args__", None) or (ann,))[0]  # list[str] -> str
                p.metavar = _TYPE_METAVARS.get(element, "VALUE")
        elif isinstance(p, TyperArgument) and not isinstance(p, _Argument):
            p.__class__ = _Argument  # typer makes its own parameter objects and has no hook to choose their class
    return params


class FerCommand(TyperCommand):
    """Every `fer` command: a Typer command whose `--help` is tidied by :func:`tidy_help`."""

    def get_params(self, ctx: Any) -> list[Any]:  # the help option is made here, so it is tidied too
        return tidy_help(super().get_params(ctx))


class FerGroup(TyperGroup):
    """`fer` and `fer data`: a Typer group whose own options' `--help` is tidied by :func:`tidy_help`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return tidy_help(super().get_params(ctx))
