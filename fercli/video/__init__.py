"""Video, camera and stream input for `fer predict`: tracked faces, smoothed expressions, and outputs.

Library use::

    from fercli import Recognizer
    from fercli.video import VideoConfig, recognizer_analyzer, run_video

    rec = Recognizer(detector="retinaface-mobilenet", detector_weights="mobilenet0.25_Final.pth")
    res = run_video(VideoConfig(source="clip.mp4", annotate="out.mp4", out="clip_fer", smooth=0.5),
                    recognizer_analyzer(rec), rec.classes)
    res.status, res.tracks          # "ok", [{"track": 1, "dominant": "happiness", "share": {...}, ...}, ...]

``run_video`` takes any :data:`Analyzer` (a callable: BGR frames -> faces with box, score and
probabilities), so the tracking, smoothing and writing can be driven without a model.
"""

from fercli.video.pipeline import (
    Analyzer, FaceObs, VideoConfig, VideoResult, predict_video, recognizer_analyzer, run_video,
)
from fercli.video.smoothing import TrackSmoother, label_flips
from fercli.video.source import Frame, FrameSource, SourceInfo, VideoProblem, is_video_run
from fercli.video.tracking import FaceTracker

__all__ = [
    "Analyzer", "FaceObs", "FaceTracker", "Frame", "FrameSource", "SourceInfo", "TrackSmoother", "VideoConfig",
    "VideoProblem", "VideoResult", "is_video_run", "label_flips", "predict_video", "recognizer_analyzer", "run_video",
]
