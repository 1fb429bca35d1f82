"""Typed stage configs: dataclass defaults < preset < workspace config < ``--config`` file < CLI flags.

Each stage defines one dataclass. :func:`build_config` fills it from the workspace's config table
for the stage, then an explicit config file (a table named after the stage, or a flat mapping),
then the flags the user actually passed (``None`` means "not given"), converting and checking
types so a typo in a config file is a one-line error naming the file and key. Config files (the
workspace's ``fer.toml``/``fer.yaml`` and ``--config``) are parsed by :func:`fercli.config_file.load_config_file`.

Then it validates the finished config (:func:`validate_config`): every option's range, choice and
path, in one place per stage (:data:`VALIDATORS`, below), before any data is read or anything
written. A bad value is one line naming the option (``--min-score must be in [0, 1), got 5.0``),
whether it came from a flag, ``fer.toml`` or ``--config``.

This module stays light (no torch, pandas or OpenCV at import): ``fer --help`` imports it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fercli.config_file import load_config_file
from fercli.errors import FerError

if typing.TYPE_CHECKING:
    from fercli.workspace import Workspace

C = TypeVar("C")


# Config fields whose flag is not simply --field-name.
FLAG_NAMES = {"sizes": "--size", "batches": "--batch", "backends": "--backend", "devices": "--device",
              "num_classes": "--classes", "rename_splits": "--rename-split", "ckpt": "CKPT", "src": "SRC"}


def flag(field: str) -> str:
    """The command-line spelling of a config field (``min_score`` -> ``--min-score``)."""
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def _option(where: str, key: str) -> str:
    """How an error names an option: the flag on the command line, the key in a config file."""
    return flag(key.replace("-", "_")) if where == "command line" else f"{where}: option {key!r}"


def _convert(value: Any, typ: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        for arg in args:
            try:
                return _convert(value, arg, where, key)
            except FerError:
                continue
        raise FerError(f"{_option(where, key)} has invalid value {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise FerError(f"{_option(where, key)} must be a list, got {value!r}")
        args = typing.get_args(typ)
        inner = args[0] if args else Any
        return origin(_convert(v, inner, where, key) for v in value)
    if origin is typing.Literal:
        if value not in typing.get_args(typ):
            raise FerError(f"{_option(where, key)} must be one of {', '.join(map(str, typing.get_args(typ)))}, "
                           f"got {value!r}")
        return value
    try:
        if typ is Path:
            return Path(value)
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return str(value)
    except (TypeError, ValueError):
        raise FerError(f"{_option(where, key)} must be {getattr(typ, '__name__', typ)}, got {value!r}") from None
    return value


def _apply(values: dict[str, Any], source: dict[str, Any], fields: dict[str, Any], where: str,
           origins: dict[str, str]) -> None:
    for key, value in source.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise FerError(f"{where}: unknown option {key!r}; known: {', '.join(sorted(fields))}")
        values[name] = _convert(value, fields[name], where, key)
        origins[name] = where


def _with_origin(message: str, origins: dict[str, str]) -> str:
    """Point a validation error at the config file that set the bad value: the message names the
    option by its flag, which the user never typed when the value came from ``fer.toml``."""
    for name, where in origins.items():
        if where != "command line" and re.match(rf"{re.escape(flag(name))}(?![\w-])", message):
            return f"{message} (set by {name!r} in {where}: fix it there, or pass {flag(name)} to override)"
    return message


def build_config(
    cls: type[C],
    section: str,
    overrides: dict[str, Any] | None = None,
    workspace: Workspace | None = None,
    config_file: str | os.PathLike[str] | None = None,
    base: dict[str, Any] | None = None,
    validate: bool = True,
) -> C:
    """Build a stage config (see the module docstring for precedence) and validate it.

    ``base`` (e.g. a recipe preset) sits just above the dataclass defaults, below everything else.
    ``validate=False`` skips :func:`validate_config` (for a first pass whose result is rebuilt).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}  # field -> where its value came from, for error messages
    _apply(values, base or {}, fields, "preset", origins)
    if workspace is not None and workspace.config_file is not None:
        _apply(values, workspace.config_section(section), fields, f"{workspace.config_file} [{section}]", origins)
    if config_file is not None:
        if not Path(config_file).is_file():
            raise FerError(f"--config {config_file}: config file not found")
        data = load_config_file(config_file)
        table = data.get(section, data) if isinstance(data.get(section), dict) else data
        _apply(values, table, fields, str(config_file), origins)
    _apply(values, {k: v for k, v in (overrides or {}).items() if v is not None}, fields, "command line", origins)
    cfg = cls(**values)
    if validate:
        try:
            validate_config(cfg)
        except FerError as exc:
            raise FerError(_with_origin(str(exc), origins)) from None
    return cfg


# ---- validation: every option of every stage, once, before any data is touched ---------------------
# One validator per stage config, keyed by the config class's module and name (registered below).
# Each raises a one-line FerError naming the option. Validators import only light modules (the configs'
# own modules, fercli.choices, fercli.schema ...): a command validates its config before it imports its
# stage (torch, OpenCV, pandas), so a bad option costs no more than `fer --help`.
VALIDATORS: dict[str, Callable[[Any], None]] = {}
DETECTOR_CHOICES = ("auto", "retinaface-resnet50", "retinaface-mobilenet", "haar", "landmarks", "none")
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"


def validate_config(cfg: Any) -> None:
    """Check every option of a stage config (see :data:`VALIDATORS`); a no-op for unregistered classes."""
    fn = VALIDATORS.get(f"{type(cfg).__module__}.{type(cfg).__qualname__}")
    if fn is not None:
        fn(cfg)


def _validator(*names: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    def register(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        for name in names:
            VALIDATORS[name] = fn
        return fn
    return register


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def need(option: str, value: Any, ok: bool, want: str) -> None:
    """Raise ``<option> must be <want>, got <value>`` unless ``ok``."""
    if not ok:
        raise FerError(f"{option} must be {want}, got {value!r}")


def choice(option: str, value: Any, options: typing.Iterable[str]) -> None:
    options = tuple(options)
    if value not in options:
        raise FerError(f"{option} must be one of {', '.join(map(str, options))}, got {value!r}")


def at_least(option: str, value: Any, low: float, optional: bool = False) -> None:
    if optional and value is None:
        return
    need(option, value, _number(value) and value >= low, f">= {low:g}")


def in_range(option: str, value: Any, low: float, high: float, low_open: bool = False, high_open: bool = False,
             optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = _number(value) and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    need(option, value, ok, f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")


def existing(option: str, path: str | os.PathLike[str] | None, what: str = "file") -> None:
    """An input path must exist (a folder is accepted where the stage looks inside it)."""
    if path is not None and not Path(path).expanduser().exists():
        raise FerError(f"{option} {path}: no such {what}")


def writable(option: str, path: str | os.PathLike[str] | None, folder: bool) -> None:
    """An output path must be creatable: not an existing file where a folder goes (or the reverse),
    and no existing file among its parents."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.exists():
        if folder and not p.is_dir():
            raise FerError(f"{option} {path}: is a file, not a folder; pass a folder")
        if not folder and p.is_dir():
            raise FerError(f"{option} {path}: is a folder; pass a file name")
        return
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise FerError(f"{option} {path}: {parent} is a file, so nothing can be written under it")
            return


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device(option: str, value: str | None) -> None:
    """The spelling of a device; whether it exists here is checked when it is used."""
    if value is not None and not _DEVICE_RE.match(str(value).strip().lower()):
        raise FerError(f"{option} {value!r} is not a device; use {DEVICE_HELP}")


def split_fractions(option: str, value: typing.Sequence[float]) -> None:
    ok = (len(value) == 3 and all(_number(v) and 0 <= v <= 1 for v in value) and abs(sum(value) - 1) < 1e-6
          and value[0] > 0)
    need(option, ",".join(f"{v:g}" for v in value) if isinstance(value, (tuple, list)) else value, ok,
         "three fractions TRAIN,VALID,TEST that sum to 1 with TRAIN > 0, e.g. 0.8,0.1,0.1")


def _runtime(cfg: Any) -> None:
    """``--runtime``: what runs an exported .onnx model (fercli.choices.RUNTIMES)."""
    if getattr(cfg, "runtime", None) is not None:
        from fercli.choices import RUNTIMES

        choice("--runtime", cfg.runtime, RUNTIMES)


def _detection(cfg: Any, detectors: typing.Sequence[str]) -> None:
    """The face-detection options `fer align` and `fer predict` share."""
    choice("--detector", cfg.detector, detectors)
    if cfg.detector_weights is not None and not Path(cfg.detector_weights).expanduser().is_file():
        raise FerError(f"--detector-weights {cfg.detector_weights}: no such file; check the path, or use --detector "
                       "retinaface-mobilenet --detector-weights mobilenet0.25_Final.pth, or --detector haar "
                       "(OpenCV's cascade, offline, boxes only)")
    choice("--faces", cfg.faces, ("largest", "best", "all"))
    in_range("--min-score", cfg.min_score, 0, 1, high_open=True)
    at_least("--min-face-size", cfg.min_face_size, 0)
    need("--size", cfg.size, isinstance(cfg.size, int) and 16 <= cfg.size <= 4096, "an integer in 16..4096")
    in_range("--margin", cfg.margin, 0, 1, high_open=True)
    need("--detect-size", cfg.detect_size, isinstance(cfg.detect_size, int) and 64 <= cfg.detect_size <= 4096,
         "an integer in 64..4096")
    device("--device", cfg.device)
    at_least("--batch-size", cfg.batch_size, 1, optional=True)


@_validator("fercli.align.config.AlignConfig")
def validate_align(cfg: Any) -> None:
    _detection(cfg, DETECTOR_CHOICES)
    at_least("--workers", cfg.workers, 0, optional=True)
    in_range("checkpoint_seconds", cfg.checkpoint_seconds, 0, math.inf, low_open=True, high_open=True)
    if hasattr(cfg, "split_fractions"):
        split_fractions("--split-fractions", cfg.split_fractions)
    cfg.check()  # the config's own checks (kept beside the dataclass)


@_validator("fercli.stage_configs.PredictConfig")
def validate_predict(cfg: Any) -> None:
    from fercli.choices import TTA_MODES
    from fercli.stage_configs import ANNOTATE_VIDEO_SUFFIXES, is_video_run

    _detection(cfg, ("auto", "retinaface-resnet50", "retinaface-mobilenet", "haar"))
    existing("--model", cfg.model)
    _runtime(cfg)
    at_least("--every", cfg.every, 1)
    if cfg.tta is not None:
        choice("--tta", cfg.tta, TTA_MODES)
    at_least("--threads", cfg.threads, 1, optional=True)
    video = is_video_run(cfg)
    # One video is annotated into an .mp4 file (or a folder); pictures into a folder.
    writable("--annotate", cfg.annotate, folder=not (video and cfg.annotate is not None
                                                      and Path(cfg.annotate).suffix.lower() in ANNOTATE_VIDEO_SUFFIXES))
    if hasattr(cfg, "detect_every"):  # the video options (fercli.video)
        at_least("--webcam", cfg.webcam, 0, optional=True)
        need("--detect-every", cfg.detect_every, isinstance(cfg.detect_every, int) and cfg.detect_every >= 1,
             "an integer >= 1")
        in_range("--smooth", cfg.smooth, 0, 3600)
        in_range("--duration", cfg.duration, 0, math.inf, low_open=True, optional=True)
        writable("--out", cfg.out, folder=True)


@_validator("fercli.stage_configs.ImportConfig")
def validate_import(cfg: Any) -> None:
    from fercli.stage_configs import IMPORT_FORMATS, parse_split_renames

    choice("FORMAT", cfg.format, (*IMPORT_FORMATS, "auto"))
    existing("SRC", cfg.src, "file or directory")
    writable("--out", cfg.out, folder=False)
    if cfg.classes is not None:
        if cfg.classes not in (7, 8):
            raise FerError(f"--classes must be 7 or 8, got {cfg.classes}")
    choice("--images", cfg.images, ("aligned", "original", "auto"))
    writable("--images-dir", cfg.images_dir, folder=True)
    parse_split_renames(cfg.rename_splits)
    if hasattr(cfg, "split_fractions"):
        split_fractions("--split-fractions", cfg.split_fractions)
        need("split_seed", cfg.split_seed, isinstance(cfg.split_seed, int) and cfg.split_seed >= 0, "an integer >= 0")


@_validator("fercli.stage_configs.EvalConfig")
def validate_eval(cfg: Any) -> None:
    from fercli.choices import TTA_MODES
    from fercli.schema import SPLITS

    existing("--model", cfg.model)
    existing("MANIFEST", cfg.manifest)
    _runtime(cfg)
    choice("--split", cfg.split, SPLITS)
    if cfg.tta is not None:
        choice("--tta", cfg.tta, TTA_MODES)
    writable("--out", cfg.out, folder=True)
    at_least("--batch-size", cfg.batch_size, 1)
    at_least("--workers", cfg.workers, 0)
    device("--device", cfg.device)
    at_least("--threads", cfg.threads, 1, optional=True)
    need("robustness_seed", cfg.robustness_seed, isinstance(cfg.robustness_seed, int) and cfg.robustness_seed >= 0,
         "an integer >= 0")
    if cfg.corruptions or cfg.robustness:
        from fercli.corruptions import check_options

        check_options(cfg.robustness, cfg.corruptions, cfg.robustness_seed)


@_validator("fercli.stage_configs.GenLabelsConfig")
def validate_gen_labels(cfg: Any) -> None:
    from fercli.schema import SPLITS

    existing("--teacher", cfg.teacher)
    for member in cfg.ensemble:
        existing("--ensemble", member)
    existing("MANIFEST", cfg.manifest)
    writable("--out", cfg.out, folder=False)
    need("--temperature", cfg.temperature, _number(cfg.temperature) and cfg.temperature > 0, "> 0")
    need("--splits", ",".join(map(str, cfg.splits)), bool(cfg.splits) and all(s in SPLITS for s in cfg.splits),
         f"a comma-separated list of {', '.join(SPLITS)}")
    at_least("--batch-size", cfg.batch_size, 1)
    at_least("--workers", cfg.workers, 0)
    device("--device", cfg.device)


@_validator("fercli.stage_configs.CalibrateConfig")
def validate_calibrate(cfg: Any) -> None:
    from fercli.schema import SPLITS

    existing("CKPT", cfg.model)
    existing("--manifest", cfg.manifest)
    choice("--split", cfg.split, SPLITS)
    writable("--out", cfg.out, folder=False)
    at_least("--batch-size", cfg.batch_size, 1)
    at_least("--workers", cfg.workers, 0)
    device("--device", cfg.device)


@_validator("fercli.training.config.TrainConfig", "fercli.training.config.TeacherConfig")
def validate_train(cfg: Any) -> None:
    from fercli.training.config import validate_train_config

    existing("MANIFEST", cfg.manifest)
    existing("--labels", cfg.labels)
    existing("--init", cfg.init)
    writable("--out", cfg.out, folder=True)
    need("--seed", cfg.seed, isinstance(cfg.seed, int) and cfg.seed >= 0, "an integer >= 0")
    device("--device", cfg.device)
    validate_train_config(cfg)  # ranges and choices of the training options (fercli.training)


@_validator("fercli.stage_configs.BenchConfig")
def validate_bench(cfg: Any) -> None:
    from fercli.choices import MODEL_NAMES
    from fercli.stage_configs import BACKENDS

    for m in cfg.models:
        if m not in MODEL_NAMES and not Path(m).exists():
            raise FerError(f"MODELS: {m!r} is neither a registered model ({', '.join(MODEL_NAMES)}) nor a file")
    for s in cfg.sizes:
        need("--size", s, isinstance(s, int) and s >= 16 and s % 16 == 0, "a multiple of 16 (48, 64, 96, 112, 224 ...)")
    for b in cfg.batches:
        at_least("--batch", b, 1)
    for b in cfg.backends:
        choice("--backend", b, BACKENDS)
    for d in cfg.devices:
        choice("--device", d, ("cpu", "cuda"))
    at_least("--classes", cfg.num_classes, 2)
    at_least("--warmup", cfg.warmup, 0)
    at_least("--reps", cfg.reps, 1)
    at_least("--min-reps", cfg.min_reps, 1)
    need("--max-seconds", cfg.max_seconds, _number(cfg.max_seconds) and cfg.max_seconds > 0, "> 0")
    at_least("--threads", cfg.threads, 0)


@_validator("fercli.stage_configs.ExportConfig")
def validate_export(cfg: Any) -> None:
    formats = typing.get_args(typing.get_type_hints(type(cfg)).get("format"))
    if formats:  # a Literal: build_config has checked it already; repeated for configs built otherwise
        choice("--format", cfg.format, formats)
    writable("--out", cfg.out, folder=False)
    in_range("--opset", cfg.opset, 7, 30)
    if cfg.tolerance is not None:
        need("--tolerance", cfg.tolerance, _number(cfg.tolerance) and cfg.tolerance > 0, "> 0")
    if hasattr(cfg, "quantize"):  # fercli.quantize: --quantize and the options that only it reads
        from fercli.quantize import check_calib_size, check_options

        existing("--calib", cfg.calib)
        check_calib_size(cfg.calib_size)
        in_range("--min-agreement", cfg.min_agreement, 0, 1, optional=True)
        if cfg.quantize is not None:
            check_options(cfg)
        elif cfg.quant_exclude:
            raise FerError("--quant-exclude applies to --quantize int8 and int8-dynamic only")


@_validator("fercli.demo.DemoConfig")
def validate_demo(cfg: Any) -> None:
    from fercli.demo import FORMATS

    writable("--out", cfg.out, folder=True)
    existing("--data", cfg.data, "file or directory")
    if cfg.format is not None or cfg.data is not None:
        choice("--format", cfg.format, FORMATS)
    need("--seed", cfg.seed, isinstance(cfg.seed, int) and cfg.seed >= 0, "an integer >= 0")


@_validator("fercli.serve.config.ServeConfig")
def validate_serve(cfg: Any) -> None:
    choice("--detector", cfg.detector, ("auto", "retinaface-resnet50", "retinaface-mobilenet", "haar", "none"))
    existing("--model", cfg.model)
    existing("--detector-weights", cfg.detector_weights)
    _runtime(cfg)
    device("--device", cfg.device)
    at_least("--threads", cfg.threads, 1, optional=True)
    cfg.check()  # ranges, the API key rule and CORS origins, kept beside the dataclass
