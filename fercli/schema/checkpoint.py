"""The checkpoint format: ``torch.save`` of a plain dict (loaded with ``weights_only=True``) with these keys.

:func:`fercli.checkpoint.make_checkpoint` fills them; :func:`fercli.checkpoint.load_checkpoint` checks them.
"""

from __future__ import annotations

from typing import Any

CHECKPOINT_FORMAT = "fercli.checkpoint"
CHECKPOINT_KEYS = (
    "format", "schema_version", "arch", "model_args", "classes", "input_size", "mean", "std",
    "state_dict", "config", "metrics", "versions", "provenance",
)
# Optional keys and their meaning when absent (checked by fercli.checkpoint.load_checkpoint):
# temperature: softmax temperature fitted by `fer calibrate` (probabilities = softmax(logits / T));
# tta: the recommended test-time augmentation ("none" or "flip"), the default of `fer eval`/`fer predict`;
# calibration: how the temperature was fitted (split, manifest sha256, ECE/NLL before and after);
# weights_dtype: "float16" in `fer export --format checkpoint --half` files.
CHECKPOINT_OPTIONAL_KEYS: dict[str, object] = {"temperature": 1.0, "tta": "none", "calibration": None, "weights_dtype": "float32"}
# A training run's last.pt also holds the optimiser, scheduler, RNG and history under this key
# (fercli.training resumes from it; `fer export --format checkpoint` drops it).
TRAIN_STATE_KEY = "train_state"
# `fer export --format checkpoint`: the exported file's provenance replaces the training run's,
# which is kept under this key.
SOURCE_PROVENANCE_KEY = "source_provenance"


def checkpoint_meta(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The metadata part of a loaded checkpoint (everything but the weights)."""
    return {k: v for k, v in ckpt.items() if k != "state_dict"}
