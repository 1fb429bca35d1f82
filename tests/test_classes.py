import pytest

from fercli.classes import (
    AFFECTNET_CODES,
    CLASSES_7,
    CLASSES_8,
    FER2013_CODES,
    RAFDB_CODES,
    canonical_name,
    check_same_classes,
    code_map,
    vocabulary,
)
from fercli.errors import FerError


def test_vocabularies():
    assert vocabulary(7) == CLASSES_7 and vocabulary(8) == CLASSES_8
    assert CLASSES_8[:7] == CLASSES_7 and CLASSES_8[-1] == "contempt"
    with pytest.raises(FerError, match="7 or 8"):
        vocabulary(6)


@pytest.mark.parametrize("codes", [RAFDB_CODES, FER2013_CODES])
def test_seven_class_datasets_cover_the_basic_classes(codes):
    assert sorted(v for v in codes.values()) == sorted(CLASSES_7)


def test_code_maps_are_by_name():
    raf = code_map(RAFDB_CODES, CLASSES_7)
    assert CLASSES_7[raf[1]] == "surprise" and CLASSES_7[raf[7]] == "neutral"
    aff7 = code_map(AFFECTNET_CODES, CLASSES_7)
    assert aff7[7] is None and aff7[8] is None and CLASSES_7[aff7[2]] == "sadness"
    fer = code_map(FER2013_CODES, CLASSES_8)
    assert CLASSES_8[fer[0]] == "anger" and CLASSES_8[fer[3]] == "happiness"


def test_synonyms():
    assert canonical_name("Happy") == "happiness"
    assert canonical_name(" ANGRY ") == "anger"
    assert canonical_name("bored") is None


def test_mismatched_class_lists_are_a_clear_error():
    check_same_classes(CLASSES_7, list(CLASSES_7), "a", "b")
    with pytest.raises(FerError, match="only in b.parquet: contempt"):
        check_same_classes(CLASSES_7, CLASSES_8, "a.pt", "b.parquet")
    with pytest.raises(FerError, match="different order"):
        check_same_classes(CLASSES_7, tuple(reversed(CLASSES_7)), "a", "b")
