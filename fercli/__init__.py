"""fercli: lightweight facial expression recognition (LFER-LDL) as a command-line pipeline.

``from fercli import Recognizer`` is the Python API (:mod:`fercli.api`).
"""

import os
from typing import Any

__version__ = "0.1.0"

# FFmpeg, inside OpenCV, prints its own complaints about a bad video ("moov atom not found" for a
# truncated mp4) straight to stderr, beside fercli's one-line error. OpenCV's log level does not reach
# it; its FFmpeg backend reads OPENCV_FFMPEG_LOGLEVEL (an FFmpeg level: -8 quiet) once, at its first use
# in the process, so it is set here, before anything opens a video. A value the user set is kept
# (OPENCV_FFMPEG_LOGLEVEL=16 shows FFmpeg's errors again).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

_API = ("Recognizer", "RecognizerConfig", "FaceResult")


def __getattr__(name: str) -> Any:
    # Imported on first use: `fer --help` and `import fercli` should not pay for torch.
    if name in _API:
        from fercli import api

        return getattr(api, name)
    raise AttributeError(f"module 'fercli' has no attribute {name!r}")
