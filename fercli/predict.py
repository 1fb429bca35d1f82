"""`fer predict`: expressions of the faces in photos, folders, globs or videos.

Detection, face selection, alignment and classification are :class:`fercli.api.Recognizer`'s, the
layer `fer serve` shares: `fer align`'s own functions with the same options, and the model's stored
preprocessing applied by the same code as `fer eval`, so a face gets the same prediction from
`predict` as from `align` followed by `eval`. The detector and classifier are loaded once; detection
is batched across images and classification across all their faces.
"""

from __future__ import annotations

import functools
import glob
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fercli.align.imageio import ImageProblem, LoadedImage, load_image
# CLASSIFY_BATCH and FaceResult live in fercli.api now; they stay importable from here.
from fercli.api import CLASSIFY_BATCH, NO_DETECTOR, FaceCrop, FaceResult, Recognizer, RecognizerConfig  # noqa: F401
from fercli.errors import FerError
from fercli.fileio import atomic_path, check_writable_dir
from fercli.imagestatus import NO_IMAGES_IN_FOLDER, NO_MATCH, path_problem
from fercli.importers.base import VIDEO_EXTS, is_image
from fercli.inference import Classifier
from fercli.progress import Track, no_track
from fercli.stage_configs import PredictConfig  # light, for the command; re-exported here
from fercli.workspace import Artifact, Workspace


@dataclass
class ImageResult:
    input: str
    frame: int | None = None
    status: str = "ok"  # ok, no_face, missing, unreadable, too_large, error
    reason: str | None = None
    size: tuple[int, int] | None = None  # (width, height)
    faces: list[FaceResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "frame": self.frame, "status": self.status, "reason": self.reason,
                "width": self.size[0] if self.size else None, "height": self.size[1] if self.size else None,
                "faces": [{"index": f.index, "box": f.box, "score": f.score, "label": f.label, "probs": f.probs}
                          for f in self.faces]}


@dataclass
class PredictResult:
    model: Artifact
    classifier: Classifier
    images: list[ImageResult]
    annotated: list[Path]
    detector: str | None = None  # None with --no-detect
    detector_note: str | None = None  # why --detector auto chose it
    tta: str = "none"  # the test-time augmentation used (--tta, else the model's recommendation)
    annotate_error: str | None = None  # why --annotate stopped (the predictions are complete regardless)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.images if r.status != "ok")


def expand_inputs(inputs: tuple[str, ...]) -> list[tuple[str, tuple[str, str] | None]]:
    """(path, problem) for every image or video named by files, folders or glob patterns, in order;
    a problem is (status, reason) in `fer align`'s vocabulary (:mod:`fercli.imagestatus`)."""
    out: list[tuple[str, tuple[str, str] | None]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(Path(d, f)) for d, _, files in os.walk(p) for f in files
                           if is_image(f) and not f.startswith("."))
            if found:
                out.extend((f, None) for f in found)
            else:
                out.append((item, ("unreadable", NO_IMAGES_IN_FOLDER)))
        elif not p.exists() and not p.is_symlink() and glob.has_magic(item):
            found = sorted(f for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if found:
                out.extend((f, None) for f in found)
            else:
                out.append((item, ("missing", NO_MATCH)))
        else:
            out.append((item, path_problem(item)))  # missing, a broken or looping link, unreadable, or fine
    return out


def _frames(path: str, every: int) -> Iterator[tuple[int, np.ndarray]]:
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ImageProblem("unreadable", "cannot open the video (unknown codec or not a video)")
    try:
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield i, frame
            i += 1
    finally:
        cap.release()


def _units(path: str, every: int) -> Iterator[tuple[int | None, LoadedImage]]:
    """The pictures one input contributes: the image itself, or every N-th frame of a video."""
    if Path(path).suffix.lower() in VIDEO_EXTS:
        n = 0
        for idx, frame in _frames(path, every):
            n += 1
            yield idx, LoadedImage(frame, 1.0, (frame.shape[1], frame.shape[0]))
        if n == 0:
            raise ImageProblem("unreadable", "the video has no readable frames")
        return
    yield None, load_image(path)


# ---- annotated copies ------------------------------------------------------------------------
# Each face gets a box in its class's colour and a compact label ("hap 94%": the class's short name and
# its probability) placed under, above or inside the box where it overlaps no other label and, if it
# can, no other face; a legend strip below the picture spells the short names out. Text and lines
# scale with the face (within bounds set by the picture's size), so labels stay readable on crowds and
# on small photos; pictures under ANNOTATE_MIN_SIDE px are enlarged for drawing.
ANNOTATE_MIN_SIDE = 256  # px: smaller pictures are enlarged (labels need room)
TEXT_PER_FACE = 0.17  # label text height / the face box's shorter side
TEXT_MIN_PX, TEXT_MIN_FRAC = 10, 0.015  # smallest label text: 10 px, or 1.5% of the picture's shorter side
TEXT_MAX_FRAC = 0.035  # largest label text: 3.5% of the picture's shorter side
LEGEND_FRAC = 0.028  # legend text height / the picture's shorter side (at least TEXT_MIN_PX)
_FONT = None  # cv2.FONT_HERSHEY_SIMPLEX, set on first use (cv2 is imported lazily)
# BGR colours of the standard classes, for boxes, legends and the video timeline alike: matplotlib's
# qualitative tab10 palette, one entry per class in a fixed order (the earlier hand-picked colours made
# happiness and surprise two similar oranges). Purple and brown are left out: beside blue and pink they
# are the palette's closest pairs. Other class names take the fallback palette (all of tab10) in order.
TAB10_CLASS_NAMES = {
    "neutral": "tab:gray", "happiness": "tab:orange", "surprise": "tab:cyan", "sadness": "tab:blue",
    "anger": "tab:red", "disgust": "tab:green", "fear": "tab:pink", "contempt": "tab:olive",
}
CLASS_COLOURS = {  # TAB10_CLASS_NAMES in BGR, spelled out so that drawing needs no matplotlib
    "neutral": (127, 127, 127), "happiness": (14, 127, 255), "surprise": (207, 190, 23),
    "sadness": (180, 119, 31), "anger": (40, 39, 214), "disgust": (44, 160, 44),
    "fear": (194, 119, 227), "contempt": (34, 189, 188),
}
_FALLBACK_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
                     (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive ends)


@dataclass
class LabelPlan:
    face: int  # index into the faces
    text: str  # "" when no place was free: the box's colour and the legend still tell the class
    rect: Rect | None  # the label's background, inside the picture
    text_height: int  # px (cv2's text height, ascenders; the rectangle adds descenders and padding)
    wanted_height: int  # px, before any shrinking to find room
    where: str  # below, above, inside-bottom, inside-top or none


@dataclass
class AnnotationPlan:
    """Where everything goes, in the coordinates of the drawn picture (``scale`` x the input's)."""

    width: int  # the picture's size (the legend strip is added below it)
    height: int
    scale: float
    boxes: list[Rect]
    thickness: list[int]
    colours: list[tuple[int, int, int]]
    labels: list[LabelPlan]
    legend: list[tuple[str, str, tuple[int, int, int]]]  # (short name, class, colour), in class order
    legend_text_height: int = 0


def short_names(classes: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The shortest prefix of at least 3 letters that tells each class from the others."""
    out = {}
    for c in classes:
        n = min(3, len(c))
        while n < len(c) and any(o != c and o.startswith(c[:n]) for o in classes):
            n += 1
        out[c] = c[:n]
    return out


def class_colours(classes: list[str] | tuple[str, ...]) -> dict[str, tuple[int, int, int]]:
    out, k = {}, 0
    for c in classes:
        if c in CLASS_COLOURS:
            out[c] = CLASS_COLOURS[c]
        else:
            out[c] = _FALLBACK_COLOURS[k % len(_FALLBACK_COLOURS)]
            k += 1
    return out


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = colour
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def _font() -> int:
    global _FONT
    if _FONT is None:
        import cv2

        _FONT = cv2.FONT_HERSHEY_SIMPLEX
    return _FONT


@functools.lru_cache(maxsize=4096)
def _text_box(text: str, height: int) -> tuple[int, int, int, float, int]:
    """(width, height, baseline, font scale, stroke) of ``text`` drawn ``height`` px tall."""
    import cv2

    stroke = max(1, round(height / 14))
    scale = cv2.getFontScaleFromHeight(_font(), height, stroke)
    (w, h), base = cv2.getTextSize(text, _font(), scale, stroke)
    return w, h, base, scale, stroke


def _overlap(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _label_places(text: str, h: int, box: Rect, t: int, W: int, H: int) -> Iterator[tuple[str, Rect]]:
    """Where a label may go, in order of preference: under the box, above it, inside at the bottom,
    inside at the top; each centred on the box, else flush with its left or right side."""
    x1, y1, x2, y2 = box
    w, th, base, _, _ = _text_box(text, h)
    pad = max(2, round(h / 5))
    lw, lh = w + 2 * pad, th + base + pad
    xs = dict.fromkeys(min(max(0, x), W - lw) for x in ((x1 + x2) // 2 - lw // 2, x1, x2 - lw))
    for where, ly in (("below", y2 + t), ("above", y1 - t - lh), ("inside-bottom", y2 - t - lh), ("inside-top", y1 + t)):
        for lx in xs:
            rect = (lx, ly, lx + lw, ly + lh)
            if lx >= 0 and ly >= 0 and rect[2] <= W and rect[3] <= H:
                yield where, rect


def _area(r: Rect) -> int:
    return (r[2] - r[0]) * (r[3] - r[1])


def _place_label(i: int, texts: tuple[str, ...], wanted: int, lo: int, box: Rect, t: int, W: int, H: int,
                 placed: list[Rect], others: list[Rect]) -> LabelPlan:
    """The first free place: at the wanted text size, else shrinking by steps to ``lo``, the full text
    before the short one at each size; first covering no other face, then anywhere free of labels."""
    sizes = [wanted]
    while sizes[-1] > lo:
        sizes.append(max(lo, int(sizes[-1] * 0.8)))
    for strict in (True, False):
        for h in sizes:
            for text in texts:
                for where, rect in _label_places(text, h, box, t, W, H):
                    if any(_overlap(rect, p) for p in placed):
                        continue
                    if strict and any(_overlap(rect, o) for o in others):
                        continue
                    return LabelPlan(i, text, rect, h, wanted, where)
    return LabelPlan(i, "", None, 0, wanted, "none")  # no room: the box's colour and the legend tell the class


def plan_annotation(width: int, height: int, faces: list[FaceResult],
                    classes: list[str] | tuple[str, ...] | None = None,
                    prefixes: list[str] | None = None) -> AnnotationPlan:
    """Lay out boxes, labels and legend for ``faces`` on a ``width`` x ``height`` picture.

    Guarantees: every label lies inside the picture and no two labels overlap (a label that finds no
    free place is left out: its box's colour still tells the class). Label text is
    ``TEXT_PER_FACE`` x the face's shorter side, within [max(10 px, 1.5%), 3.5%] of the picture's
    shorter side, and shrinks (then drops the probability) only to find room. ``prefixes`` (one per
    face) start each label, e.g. a video's track ids ("#3 hap 94%").
    """
    if classes is None:
        classes = list(faces[0].probs) if faces else []
    scale = max(1.0, ANNOTATE_MIN_SIDE / max(1, min(width, height)))
    W, H = round(width * scale), round(height * scale)
    short, colours = short_names(classes), class_colours(classes)
    side = min(W, H)
    lo = max(TEXT_MIN_PX, round(TEXT_MIN_FRAC * side))
    hi = max(lo, round(TEXT_MAX_FRAC * side))
    max_thick = max(1, round(side / 250))
    boxes, thick = [], []
    for f in faces:
        b = f.box if f.box is not None else [0, 0, width, height]  # --no-detect: the whole picture is the face
        x1, y1 = (max(0, min(W - 1, round(v * scale))) for v in b[:2])
        x2, y2 = (max(0, min(W if i == 0 else H, round(v * scale))) for i, v in enumerate(b[2:]))
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        boxes.append((x1, y1, x2, y2))
        thick.append(int(min(max_thick, max(1, round(min(x2 - x1, y2 - y1) / 70)))))
    plans: list[LabelPlan] = [LabelPlan(i, "", None, 0, 0, "none") for i in range(len(faces))]
    placed: list[Rect] = []
    for i in sorted(range(len(faces)), key=lambda i: -_area(boxes[i])):  # big faces choose first
        x1, y1, x2, y2 = boxes[i]
        f = faces[i]
        wanted = int(min(hi, max(lo, round(TEXT_PER_FACE * min(x2 - x1, y2 - y1)))))
        pre = prefixes[i] if prefixes else ""  # e.g. a video's track id, "#3 "
        texts = (f"{pre}{short[f.label]} {round(100 * f.probs[f.label])}%", f"{pre}{short[f.label]}")
        others = boxes[:i] + boxes[i + 1:]
        plans[i] = _place_label(i, texts, wanted, lo, boxes[i], thick[i], W, H, placed, others)
        if plans[i].rect is not None:
            placed.append(plans[i].rect)
    present = {f.label for f in faces}
    legend = [(short[c], c, colours[c]) for c in classes if c in present]
    return AnnotationPlan(W, H, scale, boxes, thick, [colours[f.label] for f in faces], plans, legend,
                          max(TEXT_MIN_PX, round(LEGEND_FRAC * side)))


def draw_annotation(image: np.ndarray, plan: AnnotationPlan) -> np.ndarray:
    """``image`` (BGR or grey, the input's size) with ``plan`` drawn, plus the legend strip below it."""
    import cv2

    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    if (canvas.shape[1], canvas.shape[0]) != (plan.width, plan.height):
        canvas = cv2.resize(canvas, (plan.width, plan.height), interpolation=cv2.INTER_LINEAR)
    for (x1, y1, x2, y2), t, colour in zip(plan.boxes, plan.thickness, plan.colours):
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), (0, 0, 0), t + 2, cv2.LINE_AA)  # dark halo: any background
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), colour, t, cv2.LINE_AA)
    for lab, colour in zip(plan.labels, plan.colours):
        if lab.rect is None:
            continue
        x1, y1, x2, y2 = lab.rect
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), colour, -1)
        _, th, _, scale, stroke = _text_box(lab.text, lab.text_height)
        pad = max(2, round(lab.text_height / 5))
        cv2.putText(canvas, lab.text, (x1 + pad, y1 + pad // 2 + th), _font(), scale, _ink(colour), stroke, cv2.LINE_AA)
    if not plan.legend:
        return canvas
    # The legend strip: "■ hap happiness   ■ neu neutral ...", wrapped to the picture's width.
    h = plan.legend_text_height
    pad = max(3, h // 2)
    items = []
    for short, name, colour in plan.legend:
        text = name if short == name else f"{short} = {name}"
        w, _, _, scale, stroke = _text_box(text, h)
        items.append((text, colour, w + h + pad, scale, stroke))
    rows, row, x = [], [], pad
    for it in items:
        if row and x + it[2] > plan.width - pad:
            rows.append(row)
            row, x = [], pad
        row.append(it)
        x += it[2] + 2 * pad
    rows.append(row)
    line = h + h // 2 + pad
    strip = np.full((pad + line * len(rows), plan.width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        x, y = pad, pad + r * line
        for text, colour, wid, scale, stroke in row:
            cv2.rectangle(strip, (x, y), (x + h, y + h), colour, -1)
            cv2.rectangle(strip, (x, y), (x + h, y + h), (0, 0, 0), 1)
            cv2.putText(strip, text, (x + h + pad // 2, y + h), _font(), scale, (0, 0, 0), stroke, cv2.LINE_AA)
            x += wid + 2 * pad
    return np.vstack([canvas, strip])


def annotate(image: np.ndarray, faces: list[FaceResult], dest: Path,
             classes: list[str] | tuple[str, ...] | None = None) -> AnnotationPlan:
    """Write a copy of ``image`` (BGR or grey) with each face's box and label, and a legend strip."""
    import cv2

    plan = plan_annotation(image.shape[1], image.shape[0], faces, classes)
    canvas = draw_annotation(image, plan)
    with atomic_path(dest) as tmp:
        if not cv2.imwrite(str(tmp), canvas):
            raise FerError(f"{dest}: could not write the annotated image; check the folder is writable")
    return plan


def recognizer_config(cfg: PredictConfig) -> RecognizerConfig:
    """The :class:`~fercli.api.Recognizer` options of a `fer predict` config."""
    return RecognizerConfig(
        model=cfg.model, detector=NO_DETECTOR if cfg.no_detect else cfg.detector, detector_weights=cfg.detector_weights,
        faces=cfg.faces, min_score=cfg.min_score, min_face_size=cfg.min_face_size, size=cfg.size, margin=cfg.margin,
        detect_size=cfg.detect_size, tta=cfg.tta, device=cfg.device, threads=cfg.threads, runtime=cfg.runtime)


def run_predict(cfg: PredictConfig, ws: Workspace, track: Track = no_track,
            on_model: Any = None) -> PredictResult:
    """Detect, align and classify every face of every input through one :class:`~fercli.api.Recognizer`;
    see the module docstring."""
    if not cfg.inputs:
        raise FerError("nothing to predict: name image files, folders, glob patterns or videos")
    if cfg.every < 1:
        raise FerError(f"--every must be >= 1, got {cfg.every}")
    rcfg = recognizer_config(cfg)
    rcfg.check()
    if cfg.annotate is not None:  # before any work: a bad folder must not cost the predictions
        check_writable_dir(cfg.annotate, "--annotate")
    rec = Recognizer.from_config(rcfg, ws, on_model)  # model errors say which file was tried and what is wrong

    results: list[ImageResult] = []
    crops: list[np.ndarray] = []  # uint8 RGB at the classifier's input size, one per face
    owners: list[tuple[ImageResult, FaceCrop]] = []
    keep_for_annotation: list[tuple[ImageResult, np.ndarray, float]] = []
    pending: list[tuple[ImageResult, LoadedImage]] = []

    def flush() -> None:
        if not pending:
            return
        for (res, unit), found in zip(pending, rec.detect([u for _, u in pending])):
            if cfg.annotate is not None:
                keep_for_annotation.append((res, unit.image, unit.scale))
            if not found.faces:
                res.status, res.reason = "no_face", found.reason
            for face in found.faces:
                crops.append(face.crop)
                owners.append((res, face))
        pending.clear()

    for path, problem in track(expand_inputs(cfg.inputs), "reading inputs"):
        if problem is not None:
            results.append(ImageResult(path, status=problem[0], reason=problem[1]))
            continue
        try:
            for frame, unit in _units(path, cfg.every):
                res = ImageResult(path, frame, size=unit.original_size)
                results.append(res)
                pending.append((res, unit))
                if len(pending) >= cfg.batch_size:
                    flush()
        except ImageProblem as exc:
            results.append(ImageResult(path, status=exc.status, reason=exc.reason))
    flush()

    # Classify every face in batches, with the same normalisation (and calibration) as `fer eval`.
    probs = rec.classify(np.stack(crops) if crops else [])
    k = 0
    for _, group in itertools.groupby(owners, key=lambda o: id(o[0])):  # one picture's faces are contiguous
        faces = [face for _, face in group]
        owners[k][0].faces = rec.results(faces, probs[k:k + len(faces)])
        k += len(faces)

    annotated: list[Path] = []
    annotate_error = None
    if cfg.annotate is not None:
        import cv2

        used: set[str] = set()
        for res, image, scale in keep_for_annotation:
            if not res.faces:
                continue
            if scale != 1.0 and res.size:  # draw at the input's own size
                image = cv2.resize(image, res.size, interpolation=cv2.INTER_LINEAR)
            stem = Path(res.input).stem + (f"_f{res.frame:06d}" if res.frame is not None else "")
            fname, k = f"{stem}_annotated.jpg", 2
            while fname in used:  # photos with the same name in different folders
                fname, k = f"{stem}_{k}_annotated.jpg", k + 1
            used.add(fname)
            dest = Path(cfg.annotate) / fname
            try:
                annotate(image, res.faces, dest, rec.classes)
            except (FerError, OSError) as exc:  # e.g. the disk filled up: the predictions still count
                annotate_error = f"{dest}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
                break
            annotated.append(dest)
    return PredictResult(rec.model, rec.classifier, results, annotated, rec.detector_name, rec.detector_note, rec.tta,
                         annotate_error)
