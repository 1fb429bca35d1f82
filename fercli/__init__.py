"""fercli: lightweight facial expression recognition (LFER-LDL) as a command-line pipeline.

``from fercli import Recognizer`` is the Python API (:mod:`fercli.api`).
"""

from typing import Any

__version__ = "0.1.0"

_API = ("Recognizer", "RecognizerConfig", "FaceResult")


def __getattr__(name: str) -> Any:
    # Imported on first use: `fer --help` and `import fercli` should not pay for torch.
    if name in _API:
        from fercli import api

        return getattr(api, name)
    raise AttributeError(f"module 'fercli' has no attribute {name!r}")
