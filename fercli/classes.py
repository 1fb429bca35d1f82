"""Canonical class vocabularies and each dataset's label codes, mapped by name.

Every dataset orders its expressions differently (RAF-DB starts at Surprise, AffectNet and FER2013
at Neutral and Angry). fercli uses one canonical order, FERPlus's, with contempt last so that the
7-class list is a prefix of the 8-class one. Dataset codes are mapped onto it by *name*, never by
position, and every artifact stores the class list it was made with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fercli.errors import FerError

CLASSES_8: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)
CLASSES_7: tuple[str, ...] = CLASSES_8[:7]

# Spellings found in dataset folders and papers, lower-cased, mapped to the canonical name.
SYNONYMS: dict[str, str] = {
    "neutral": "neutral",
    "neutrality": "neutral",
    "happiness": "happiness",
    "happy": "happiness",
    "joy": "happiness",
    "surprise": "surprise",
    "surprised": "surprise",
    "sadness": "sadness",
    "sad": "sadness",
    "anger": "anger",
    "angry": "anger",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "contempt": "contempt",
}

# Each dataset's own label codes, by name. Codes mapped to None are not expressions and are dropped
# (AffectNet 8-10) or left unlabelled (FERPlus unknown / not-a-face).
RAFDB_CODES: dict[int, str] = {
    1: "surprise",
    2: "fear",
    3: "disgust",
    4: "happiness",
    5: "sadness",
    6: "anger",
    7: "neutral",
}
AFFECTNET_CODES: dict[int, str | None] = {
    0: "neutral",
    1: "happiness",
    2: "sadness",
    3: "surprise",
    4: "fear",
    5: "disgust",
    6: "anger",
    7: "contempt",
    8: None,  # None
    9: None,  # Uncertain
    10: None,  # No-Face
}
FER2013_CODES: dict[int, str] = {
    0: "anger",
    1: "disgust",
    2: "fear",
    3: "happiness",
    4: "sadness",
    5: "surprise",
    6: "neutral",
}
# FERPlus label.csv vote columns, in file order; the last two are not expressions.
FERPLUS_VOTES: tuple[str, ...] = CLASSES_8 + ("unknown", "nf")


def vocabulary(num_classes: int) -> tuple[str, ...]:
    """The canonical class list with 7 (basic) or 8 (with contempt) classes."""
    if num_classes == 7:
        return CLASSES_7
    if num_classes == 8:
        return CLASSES_8
    raise FerError(f"--classes must be 7 or 8, got {num_classes}")


def canonical_name(name: str) -> str | None:
    """Canonical class name for a spelling such as ``Happy`` or ``angry``; None if unknown."""
    return SYNONYMS.get(name.strip().lower())


def code_map(codes: Mapping[int, str | None], classes: Sequence[str]) -> dict[int, int | None]:
    """Map dataset codes to indices into ``classes``; codes whose class is absent map to None."""
    index = {name: i for i, name in enumerate(classes)}
    return {code: (index.get(name) if name is not None else None) for code, name in codes.items()}


def check_same_classes(
    a: Sequence[str], b: Sequence[str], a_what: str, b_what: str, fix: str = ""
) -> None:
    """Refuse to combine artifacts whose class lists differ (in content or order)."""
    if list(a) == list(b):
        return
    if set(a) == set(b):
        detail = "same classes in a different order"
    else:
        only_a = [c for c in a if c not in b]
        only_b = [c for c in b if c not in a]
        parts = []
        if only_a:
            parts.append(f"only in {a_what}: {', '.join(only_a)}")
        if only_b:
            parts.append(f"only in {b_what}: {', '.join(only_b)}")
        detail = "; ".join(parts)
    msg = f"class lists differ between {a_what} ({len(a)} classes) and {b_what} ({len(b)} classes): {detail}"
    raise FerError(msg + (f"; {fix}" if fix else ""))
