"""Choosing the compute device, the same way for every stage."""

from __future__ import annotations

import torch

from fercli.errors import FerError


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None) picks CUDA when available, else CPU; an unavailable device is an error."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise FerError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FerError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FerError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise FerError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    return dev
