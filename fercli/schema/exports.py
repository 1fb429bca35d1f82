"""Exported models (`fer export`): the graph's input/output names and the metadata that travels with them.

The metadata (:func:`export_metadata`) is stored in ONNX ``metadata_props`` (under
:data:`ONNX_META_KEY`, plus :func:`onnx_plain_props` as plain strings for other runtimes), in a
TorchScript archive's extra file :data:`TORCHSCRIPT_META_FILE`, and in the sidecar
(:func:`fercli.schema.files.sidecar_path`) with the parity check and provenance added.
"""

from __future__ import annotations

import json
from typing import Any

from fercli.schema.common import SCHEMA_VERSION

EXPORT_KIND = "export"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
ONNX_META_KEY = "fercli"  # metadata_props key holding the JSON metadata
TORCHSCRIPT_META_FILE = "fercli.json"  # extra file inside a TorchScript archive


def export_metadata(ckpt: dict[str, Any], fmt: str, temperature: float, tta: str,
                    versions: dict[str, str]) -> dict[str, Any]:
    """What a deployed model needs to be fed and read: classes, preprocessing, calibration, identity."""
    size = int(ckpt["input_size"])
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": EXPORT_KIND,
        "format": fmt,
        "arch": ckpt["arch"],
        "model_args": ckpt["model_args"],
        "classes": list(ckpt["classes"]),
        "input_size": size,
        "mean": list(ckpt["mean"]),
        "std": list(ckpt["std"]),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size],
                  "dtype": "float32", "layout": "NCHW, RGB, (x / 255 - mean) / std"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(ckpt["classes"])],
                   "meaning": "raw logits; probabilities = softmax(logits / temperature)"},
        "temperature": temperature,
        "tta": tta,
        "versions": versions,
    }


def onnx_plain_props(meta: dict[str, Any]) -> dict[str, str]:
    """ONNX ``metadata_props``: the JSON metadata, and the essentials as plain strings for other runtimes."""
    props = {ONNX_META_KEY: json.dumps(meta), "classes": json.dumps(meta["classes"]),
             "input_size": str(meta["input_size"]), "mean": json.dumps(meta["mean"]), "std": json.dumps(meta["std"]),
             "temperature": repr(float(meta["temperature"])), "tta": meta["tta"]}
    if meta.get("quantization"):
        props["quantization"] = meta["quantization"]["mode"]
    return props
