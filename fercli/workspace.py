"""The workspace: where each stage finds its inputs when no path is given.

A workspace is a directory (``--workspace``, else ``$FER_WORKSPACE``, else the current directory)
with an optional config file (``fer.toml`` or ``fer.yaml``, one table per stage) and a default
location for each artifact kind (:data:`fercli.schema.ARTIFACT_FILES`). When a stage writes an
artifact it is recorded as the workspace's *current* one of its kind (``.fer/state.json``), so
``fer align raw/ aligned/`` makes ``aligned/manifest.parquet`` the dataset later stages use.

Every artifact records the sha256 of the inputs it was made from. Resolving a stage's inputs
checks them against each other and, for inputs taken from the workspace implicitly, against the
workspace's current artifacts: labels made from another manifest or an older teacher are refused
with the command that remakes them (the stages and their commands: :mod:`fercli.pipeline`; the
`fer status` report: :mod:`fercli.status`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fercli.artifact import Artifact, format_summary, format_time, labelled_splits, run_summary, short_sha
from fercli.classes import check_same_classes
from fercli.config_file import load_config_file
from fercli.errors import FerError
from fercli.fileio import atomic_write_json, sha256_file
from fercli.pipeline import STAGES
from fercli.schema import (ARTIFACT_FILES, BEST_CHECKPOINT, CONFIG_FILES, MANIFEST_NAME, REPORT_JSON, STATE_FILE,
                           content_sha256, read_artifact_meta)

ENV_VAR = "FER_WORKSPACE"
# The file a stage looks for when it is given a folder instead of an artifact (e.g. `fer train aligned/`).
FILES_INSIDE: dict[str, tuple[str, ...]] = {
    "dataset": (MANIFEST_NAME,),
    "teacher": (BEST_CHECKPOINT,),
    "student": (BEST_CHECKPOINT,),
    "labels": (Path(ARTIFACT_FILES["labels"]).name,),
    "eval": (REPORT_JSON,),
    "export": ("model.onnx", "model.torchscript"),
}
WHAT = {"dataset": "a dataset manifest (.parquet)", "teacher": "a checkpoint (.pt)", "student": "a checkpoint (.pt)",
        "labels": "a labels file (.parquet)", "eval": "an eval report (.json)", "export": "an exported model"}


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
        try:  # so that `fer status` finds what it shows without loading the file (and torch)
            self.artifact_info(path)
        except Exception:  # a cache: the artifact is recorded either way
            pass

    def artifact_info(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """What `fer status` shows of an artifact: its class list, provenance and, for a manifest, the
        labelled rows per split. Cached in the state by (size, mtime), so status reads no checkpoint
        (torch) and no table (pandas) twice."""
        p = Path(path).resolve()
        st = p.stat()
        cache = self._load_state().setdefault("info", {})
        hit = cache.get(str(p))
        if isinstance(hit, list) and len(hit) == 3 and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        meta = read_artifact_meta(p)
        info: dict[str, Any] = {"classes": meta.get("classes"), "provenance": meta.get("provenance") or {}}
        if p.suffix.lower() == ".parquet":
            info["labelled_splits"] = labelled_splits(p)
        info = json.loads(json.dumps(info, default=str))
        cache[str(p)] = [st.st_size, st.st_mtime_ns, info]
        if self.root.is_dir():
            self._save_state()
        return info

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
            if path.is_dir():
                path = self._inside(kind, path)
            return Artifact(kind, path, read_artifact_meta(path), implicit=False)
        path = self.current_path(kind)
        if path is None:
            stage = STAGES[kind]
            raise FerError(
                f"no {kind} in workspace {self.root} (looked for {ARTIFACT_FILES[kind]}): "
                f"run {stage.how} first, or pass its path"
            )
        return Artifact(kind, path, read_artifact_meta(path), implicit=True)

    @staticmethod
    def _inside(kind: str, folder: Path) -> Path:
        """The artifact inside a folder given in its place (``aligned/`` -> ``aligned/manifest.parquet``)."""
        names = FILES_INSIDE.get(kind, ())
        for name in names:
            if (folder / name).is_file():
                return folder / name
        looked = " or ".join(str(folder / n) for n in names) or "a file"
        raise FerError(f"{folder}: is a folder, not {WHAT.get(kind, 'a file')}, and holds no {looked}; "
                       f"pass the file itself")

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
                    f"{self.rel(art.path)} was made from {role} {ref.get('path')} (sha256 {short_sha(ref.get('sha256'))}) "
                    f"but {how} {self.rel(current)} (sha256 {short_sha(sha)})"
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
        text = f"{self.rel(art.path)} (made {format_time(art.created)}"
        if art.summary:
            text += f"; {format_summary(run_summary(art.kind, art.path, art.summary))}"
        return text + ")"

    def status(self) -> dict[str, Any]:
        """`fer status`'s report of this workspace: see :func:`fercli.status.status_report`."""
        from fercli.status import status_report  # it imports this module

        return status_report(self)
