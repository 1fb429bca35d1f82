"""The workspace: where each stage finds its inputs when no path is given.

A workspace is a directory (``--workspace``, else ``$FER_WORKSPACE``, else the current directory)
with an optional config file (``fer.toml`` or ``fer.yaml``, one table per stage) and a default
location for each artifact kind (:data:`fercli.schema.ARTIFACT_FILES`). When a stage writes an
artifact it is recorded as the workspace's *current* one of its kind (``.fer/state.json``), so
``fer align raw/ aligned/`` makes ``aligned/manifest.parquet`` the dataset later stages use.

Every artifact records the sha256 of the inputs it was made from. Resolving a stage's inputs
checks them against each other and, for inputs taken from the workspace implicitly, against the
workspace's current artifacts: labels made from another manifest or an older teacher are refused
with the command that remakes them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fercli.classes import check_same_classes
from fercli.errors import FerError
from fercli.fileio import atomic_write_json, sha256_file
from fercli.schema import ARTIFACT_FILES, CONFIG_FILES, STATE_FILE, content_sha256, read_artifact_meta

ENV_VAR = "FER_WORKSPACE"


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
PIPELINE: tuple[Stage, ...] = (
    Stage("dataset", "fer align SRC aligned/", (), "fer data import FORMAT SRC"),
    Stage("teacher", "fer pretrain-teacher", ("dataset",)),
    Stage("labels", "fer gen-labels", ("dataset", "teacher")),
    Stage("student", "fer train --beta 0.2", ("dataset", "labels")),
    Stage("eval", "fer eval", ("student", "dataset")),
    Stage("export", "fer export", ("student",)),
)
STAGES: dict[str, Stage] = {s.kind: s for s in PIPELINE}


@dataclass
class Artifact:
    """A resolved artifact: its kind, path, metadata, and whether it came from the workspace."""

    kind: str
    path: Path
    meta: dict[str, Any]
    implicit: bool = False
    bundled: bool = False  # the model shipped inside the package (fercli.inference.bundled_model)

    @property
    def origin(self) -> str:
        """Where it came from, as the CLI says it: workspace, given or bundled."""
        return "bundled" if self.bundled else "workspace" if self.implicit else "given"

    @property
    def provenance(self) -> dict[str, Any]:
        return self.meta.get("provenance") or {}

    @property
    def classes(self) -> list[str] | None:
        return self.meta.get("classes")

    @property
    def created(self) -> str | None:
        return self.provenance.get("created")

    @property
    def summary(self) -> dict[str, Any]:
        return self.provenance.get("summary") or {}


def _short(sha: str | None) -> str:
    return (sha or "?")[:12]


def _fmt_time(iso: str | None) -> str:
    if not iso:
        return "unknown time"
    try:
        return _dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def format_summary(summary: dict[str, Any]) -> str:
    parts = []
    for k, v in summary.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, int):
            v = f"{v:,}"
        parts.append(f"{k} {v}")
    return ", ".join(parts)


class Workspace:
    """A workspace directory; see the module docstring for the convention."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._state: dict[str, Any] | None = None

    @classmethod
    def find(cls, explicit: str | os.PathLike[str] | None = None) -> Workspace:
        """``explicit`` if given, else ``$FER_WORKSPACE``, else the current directory."""
        root = explicit or os.environ.get(ENV_VAR) or os.getcwd()
        if Path(root).exists() and not Path(root).is_dir():
            raise FerError(f"{root}: workspace must be a directory")
        return cls(root)

    # ---- paths ------------------------------------------------------------------------------
    def rel(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the workspace when inside it (for messages), else absolute."""
        p = Path(path).resolve()
        try:
            return str(p.relative_to(self.root))
        except ValueError:
            return str(p)

    def default_path(self, kind: str) -> Path:
        if kind not in ARTIFACT_FILES:
            raise KeyError(kind)
        return self.root / ARTIFACT_FILES[kind]

    # ---- config -----------------------------------------------------------------------------
    @property
    def config_file(self) -> Path | None:
        for name in CONFIG_FILES:
            if (self.root / name).is_file():
                return self.root / name
        return None

    def config_section(self, section: str) -> dict[str, Any]:
        """The ``[section]`` table of the workspace config file (empty if none)."""
        path = self.config_file
        if path is None:
            return {}
        data = load_config_file(path)
        value = data.get(section, {})
        if not isinstance(value, dict):
            raise FerError(f"{path}: [{section}] must be a table of options")
        return value

    # ---- state ------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    def _load_state(self) -> dict[str, Any]:
        if self._state is None:
            try:
                self._state = json.loads(self.state_path.read_text())
            except FileNotFoundError:
                self._state = {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                # The state is a cache of pointers; a damaged one is rebuilt from the defaults.
                self._state = {}
            self._state.setdefault("current", {})
            self._state.setdefault("hashes", {})
        return self._state

    def reload(self) -> None:
        """Forget the cached state (another process, e.g. a stage run as a command, may have changed it)."""
        self._state = None

    def _save_state(self) -> None:
        atomic_write_json(self.state_path, self._load_state())

    def sha256(self, path: str | os.PathLike[str]) -> str:
        """The identity recorded for an artifact: for fercli parquet tables (manifests, labels) the
        sha256 of their content (:func:`fercli.schema.content_sha256`: rows and meaningful metadata,
        not when or where they were written), for other files the sha256 of their bytes. Cached in
        the state by (size, mtime) so large checkpoints hash once."""
        return self._hashes(path)[0]

    def file_sha256(self, path: str | os.PathLike[str]) -> str:
        """sha256 of the file's bytes (what artifacts made before content identities recorded)."""
        return self._hashes(path)[1]

    def _hashes(self, path: str | os.PathLike[str]) -> tuple[str, str]:
        p = Path(path).resolve()
        st = p.stat()
        key = str(p)
        hashes = self._load_state()["hashes"]
        cached = hashes.get(key)
        if cached and len(cached) == 4 and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            return cached[2], cached[3]
        file_digest = sha256_file(p)
        identity = content_sha256(p) or file_digest
        hashes[key] = [st.st_size, st.st_mtime_ns, identity, file_digest]
        if self.root.is_dir():
            self._save_state()
        return identity, file_digest

    def record(self, kind: str, path: str | os.PathLike[str]) -> None:
        """Make ``path`` the workspace's current artifact of ``kind`` (called after a stage writes it)."""
        if kind not in ARTIFACT_FILES:
            raise KeyError(kind)
        self._load_state()["current"][kind] = self.rel(path)
        self._save_state()

    def current_path(self, kind: str) -> Path | None:
        """The recorded current artifact of ``kind`` if it exists, else the default location if it exists."""
        recorded = self._load_state()["current"].get(kind)
        if recorded:
            p = Path(recorded)
            p = p if p.is_absolute() else self.root / p
            if p.exists():
                return p
        default = self.default_path(kind)
        return default if default.exists() else None

    def input_ref(self, artifact: Artifact) -> dict[str, str]:
        """How an artifact is recorded among another artifact's inputs."""
        return {"path": self.rel(artifact.path), "sha256": self.sha256(artifact.path)}

    # ---- resolution -------------------------------------------------------------------------
    def resolve(self, kind: str, explicit: str | os.PathLike[str] | None = None) -> Artifact:
        """The artifact of ``kind`` to use: ``explicit`` if given, else the workspace's current one."""
        if explicit is not None:
            path = Path(explicit)
            if not path.exists():
                raise FerError(f"{path}: no such file")
            return Artifact(kind, path, read_artifact_meta(path), implicit=False)
        path = self.current_path(kind)
        if path is None:
            stage = STAGES[kind]
            raise FerError(
                f"no {kind} in workspace {self.root} (looked for {ARTIFACT_FILES[kind]}): "
                f"run {stage.how} first, or pass its path"
            )
        return Artifact(kind, path, read_artifact_meta(path), implicit=True)

    def resolve_inputs(self, explicit: dict[str, str | os.PathLike[str] | None]) -> dict[str, Artifact]:
        """Resolve several inputs of one stage and refuse mismatched or stale combinations.

        Inputs are checked against each other by the sha256 each records of the others, and
        implicitly resolved ones also against the workspace's current artifacts; all class lists
        must agree.
        """
        arts = {kind: self.resolve(kind, path) for kind, path in explicit.items()}
        for art in arts.values():
            self.check_fresh(art, arts)
        with_classes = [a for a in arts.values() if a.classes]
        for a, b in zip(with_classes, with_classes[1:]):
            check_same_classes(
                a.classes, b.classes, self.rel(a.path), self.rel(b.path),
                fix=f"remake the {b.kind} from the same dataset",
            )
        return arts

    def staleness(self, art: Artifact, others: dict[str, Artifact] | None = None) -> str | None:
        """Why ``art`` is stale or mismatched (a message), or None when it is consistent."""
        others = others or {}
        for role, ref in art.provenance.get("inputs", {}).items():
            if role not in ARTIFACT_FILES or not isinstance(ref, dict):
                continue
            if role in others:
                current, how = others[role].path, "this run uses"
            elif art.implicit:
                current, how = self.current_path(role), "the workspace's current one is"
                if current is None:
                    continue
            else:
                continue
            sha = self.sha256(current)
            # refs written before content identities hold the file's sha256: still fresh if it matches
            if ref.get("sha256") not in (sha, self.file_sha256(current)):
                return (
                    f"{self.rel(art.path)} was made from {role} {ref.get('path')} (sha256 {_short(ref.get('sha256'))}) "
                    f"but {how} {self.rel(current)} (sha256 {_short(sha)})"
                )
        return None

    def check_fresh(self, art: Artifact, others: dict[str, Artifact] | None = None) -> None:
        """Raise with the command to rerun when ``art`` is stale or mismatched."""
        why = self.staleness(art, others)
        if why:
            stage = STAGES.get(art.kind)
            fix = f"rerun `{stage.command}`" if stage else "remake it"
            raise FerError(f"stale input: {why}; {fix}, or pass matching files explicitly")

    def describe(self, art: Artifact) -> str:
        """One line for "using ..." messages: path, when made, key figures."""
        text = f"{self.rel(art.path)} (made {_fmt_time(art.created)}"
        if art.summary:
            text += f"; {format_summary(art.summary)}"
        return text + ")"

    # ---- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Every artifact kind: where it is, when made, from what, stale or not; and the next stage."""
        rows = []
        states: dict[str, str] = {}
        next_cmd = None
        for stage in PIPELINE:
            path = self.current_path(stage.kind)
            row: dict[str, Any] = {"kind": stage.kind, "path": None, "state": "missing", "made_by": stage.command}
            if path is not None:
                row["path"] = self.rel(path)
                try:
                    art = Artifact(stage.kind, path, read_artifact_meta(path), implicit=True)
                except FerError as exc:
                    row.update(state="unreadable", problem=str(exc))
                else:
                    why = self.staleness(art)
                    if why is None:  # made from an artifact that is itself stale: stale too
                        bad = [k for k in art.provenance.get("inputs", {}) if states.get(k) == "stale"]
                        if bad:
                            why = f"{self.rel(path)} was made from {bad[0]}, which is stale"
                    row.update(
                        state="stale" if why else "ok",
                        created=art.created,
                        summary=art.summary,
                        inputs={k: v.get("path") for k, v in art.provenance.get("inputs", {}).items() if isinstance(v, dict)},
                    )
                    if why:
                        row["problem"] = why
            states[stage.kind] = row["state"]
            if row["state"] != "ok" and next_cmd is None and stage.kind not in ("eval", "export"):
                next_cmd = stage.command
            rows.append(row)
        if next_cmd is None:
            pending = [r for r in rows if r["state"] != "ok"]
            next_cmd = STAGES[pending[0]["kind"]].command if pending else None
        return {"workspace": str(self.root), "config": self.rel(self.config_file) if self.config_file else None,
                "artifacts": rows, "next": next_cmd}


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML or YAML config file into a dict, with a one-line error when malformed."""
    path = Path(path)
    if not path.is_file():
        raise FerError(f"{path}: config file not found")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text()) or {}
        else:
            raise FerError(f"{path}: config files must be .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FerError(f"{path}: malformed config ({exc})") from exc
    except Exception as exc:  # yaml.YAMLError without importing yaml at module level
        if type(exc).__module__.startswith("yaml"):
            raise FerError(f"{path}: malformed config ({' '.join(str(exc).split())})") from exc
        raise
    if not isinstance(data, dict):
        raise FerError(f"{path}: config must be a mapping of option names to values")
    return data
