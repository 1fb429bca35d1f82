"""Artifact schemas: the on-disk formats of fercli's artifacts, each defined here once.

Owned here: manifests and label tables (columns, types, metadata), checkpoints (keys), the
workspace's file names, a training run's files, `fer eval`'s report files and header, exports
(graph names, embedded metadata, sidecars), and the schema version they all carry:

* :mod:`~fercli.schema.common`: the schema version, the parquet metadata key, provenance blocks;
* :mod:`~fercli.schema.columns`: manifest and label-table columns, their Arrow types, ``dist_<class>``;
* :mod:`~fercli.schema.manifest`: manifests (a parquet table, one row per image or face, image paths
  relative to a root stored in the file's metadata): validate, write, read;
* :mod:`~fercli.schema.labels`: label distributions from `fer gen-labels`;
* :mod:`~fercli.schema.parquet`: the ``fercli`` parquet metadata and the content identity of tables;
* :mod:`~fercli.schema.checkpoint`: the keys of a checkpoint dict;
* :mod:`~fercli.schema.files`: workspace file names, a training run's files, sidecars, reading any
  artifact's metadata;
* :mod:`~fercli.schema.reports`: `fer eval`'s report files, ``report.json``'s header, CSV columns;
* :mod:`~fercli.schema.exports`: exported models' input/output names and embedded metadata.

Every artifact carries ``fercli`` metadata: schema version, kind, class list and provenance (which
inputs, by sha256, made it; when; with which command). Not owned here: caches (the decoded images
of :mod:`fercli.data`, the corrupted images of :mod:`fercli.robustness`), `fer align`'s resume
journal (:mod:`fercli.align.journal`), `fer predict`'s outputs (:data:`fercli.video.pipeline.OUT_FILES`)
and `fer demo`'s report page: their modules name them. Everything is re-exported here:
``from fercli.schema import ...``.
"""

from fercli.schema.checkpoint import (
    CHECKPOINT_FORMAT, CHECKPOINT_KEYS, CHECKPOINT_OPTIONAL_KEYS, SOURCE_PROVENANCE_KEY, TRAIN_STATE_KEY,
    checkpoint_meta,
)
from fercli.schema.columns import (
    BOX_COLUMNS, COL_LABEL, COL_LABEL_NAME, COL_PATH, COL_SPLIT, DIST_PREFIX, DIST_TOLERANCE, LANDMARK_COLUMNS,
    OPTIONAL_COLUMNS, REQUIRED_COLUMNS, SPLITS, UNLABELLED, VOTE_PREFIX, dist_columns,
)
from fercli.schema.common import META_KEY, SCHEMA_VERSION, make_provenance, now_iso
from fercli.schema.exports import (
    EXPORT_KIND, INPUT_NAME, ONNX_META_KEY, OUTPUT_NAME, TORCHSCRIPT_META_FILE, export_metadata,
    onnx_plain_props,
)
from fercli.schema.files import (
    ARTIFACT_FILES, BEST_CHECKPOINT, CONFIG_FILES, CURVES_PNG, IMPORTED_MANIFEST, LAST_CHECKPOINT,
    MANIFEST_NAME, METRICS_CSV, RUN_FILES, SIDECAR_SUFFIX, STATE_FILE, read_artifact_meta, sidecar_path,
)
from fercli.schema.labels import LABELS_KIND, read_labels, validate_labels, write_labels
from fercli.schema.manifest import (
    MANIFEST_KIND, Manifest, _resolve_root, known_class_list, read_manifest, validate_manifest, write_manifest,
)
from fercli.schema.parquet import content_sha256, read_parquet_meta
from fercli.schema.reports import (
    CONFUSION_CSV, CONFUSION_INDEX, CONFUSION_PNG, EVAL_FILES, PREDICTION_COLUMNS, PREDICTIONS_CSV, PROB_PREFIX,
    RELIABILITY_PNG, REPORT_JSON, ROBUSTNESS_JSON, ROBUSTNESS_PNG, manifest_ref, model_ref, prob_columns,
    report_header,
)

__all__ = [
    "ARTIFACT_FILES", "BEST_CHECKPOINT", "BOX_COLUMNS", "CHECKPOINT_FORMAT", "CHECKPOINT_KEYS",
    "CHECKPOINT_OPTIONAL_KEYS", "COL_LABEL", "COL_LABEL_NAME", "COL_PATH", "COL_SPLIT", "CONFIG_FILES",
    "CONFUSION_CSV", "CONFUSION_INDEX", "CONFUSION_PNG", "CURVES_PNG", "DIST_PREFIX", "DIST_TOLERANCE", "EVAL_FILES",
    "EXPORT_KIND", "IMPORTED_MANIFEST", "INPUT_NAME", "LABELS_KIND", "LANDMARK_COLUMNS", "LAST_CHECKPOINT",
    "MANIFEST_KIND", "MANIFEST_NAME", "META_KEY", "METRICS_CSV", "Manifest", "ONNX_META_KEY", "OPTIONAL_COLUMNS",
    "OUTPUT_NAME", "PREDICTIONS_CSV", "PREDICTION_COLUMNS", "PROB_PREFIX", "RELIABILITY_PNG", "REPORT_JSON",
    "REQUIRED_COLUMNS", "ROBUSTNESS_JSON", "ROBUSTNESS_PNG", "RUN_FILES", "SCHEMA_VERSION", "SIDECAR_SUFFIX",
    "SOURCE_PROVENANCE_KEY", "SPLITS", "STATE_FILE", "TORCHSCRIPT_META_FILE", "TRAIN_STATE_KEY", "UNLABELLED",
    "VOTE_PREFIX", "_resolve_root", "checkpoint_meta", "content_sha256", "dist_columns", "export_metadata",
    "known_class_list", "make_provenance", "manifest_ref", "model_ref", "now_iso", "onnx_plain_props",
    "prob_columns", "read_artifact_meta", "read_labels", "read_manifest", "read_parquet_meta", "report_header",
    "sidecar_path", "validate_labels", "validate_manifest", "write_labels", "write_manifest",
]
