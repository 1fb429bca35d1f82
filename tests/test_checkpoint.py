"""Self-describing checkpoints: rebuilt from the file alone, pickled code refused, clear errors."""

from __future__ import annotations

import pytest
import torch

from fercli.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
from fercli.classes import CLASSES_7
from fercli.errors import FerError
from fercli.models import create_model, model_args
from fercli.schema import CHECKPOINT_KEYS, read_artifact_meta

pytestmark = pytest.mark.usefixtures("one_thread")


def _save(path, overrides=None):
    model = create_model("lfer", 7)
    ck = make_checkpoint(model, "lfer", model_args("lfer", 7), CLASSES_7, 64, metrics={"acc": 0.5})
    ck.update(overrides or {})
    save_checkpoint(path, ck)
    return model


def test_model_rebuilds_from_the_file_alone(tmp_path):
    torch.manual_seed(0)
    model = _save(tmp_path / "a.pt").eval()
    raw = torch.load(tmp_path / "a.pt", weights_only=True)  # plain containers and tensors only
    assert set(CHECKPOINT_KEYS) <= set(raw)
    assert raw["arch"] == "lfer" and raw["classes"] == list(CLASSES_7) and raw["input_size"] == 64
    assert raw["mean"] == pytest.approx([0.485, 0.456, 0.406]) and raw["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert {"fercli", "torch", "torchvision"} <= set(raw["versions"])
    assert raw["temperature"] == 1.0 and raw["tta"] == "none"  # uncalibrated until `fer calibrate`
    rebuilt, ck = model_from_checkpoint(tmp_path / "a.pt")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    meta = read_artifact_meta(tmp_path / "a.pt")  # the workspace reads the same file
    assert meta["arch"] == "lfer" and "state_dict" not in meta


class _Payload:
    """Would run code at load time if unpickled."""

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Payload.marker),))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    _Payload.marker = str(tmp_path / "pwned")
    ck = make_checkpoint(create_model("shufflenet_v2", 7), "shufflenet_v2", model_args("shufflenet_v2", 7), CLASSES_7)
    ck["config"] = {"hook": _Payload()}
    torch.save(ck, tmp_path / "evil.pt")
    for load in (load_checkpoint, model_from_checkpoint, read_artifact_meta):
        with pytest.raises(FerError, match="refused to load.*pickled code"):
            load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_weights_of_another_architecture_are_a_clear_error(tmp_path):
    other = create_model("shufflenet_v2", 7).state_dict()
    _save(tmp_path / "mixed.pt", {"state_dict": other})
    with pytest.raises(FerError, match=r"weights do not fit lfer .*missing pdwres.*wrong shape conv1.0.weight"):
        model_from_checkpoint(tmp_path / "mixed.pt")


@pytest.mark.parametrize("change, message", [
    ({"arch": "mobilenet_v9"}, "unknown model 'mobilenet_v9'"),
    ({"schema_version": 99}, "upgrade fercli"),
    ({"format": "something.else"}, "not a fercli checkpoint"),
    ({"input_size": 50}, "input_size 50 is not supported"),
    ({"classes": ["a", "b"]}, "2 classes but model_args.num_classes=7"),
    ({"model_args": {"num_classes": 7, "depth": 3}}, "cannot rebuild lfer"),
])
def test_incompatible_checkpoints_are_a_clear_error(tmp_path, change, message):
    _save(tmp_path / "bad.pt", change)
    with pytest.raises(FerError, match=message):
        model_from_checkpoint(tmp_path / "bad.pt")


def test_missing_keys_and_unreadable_files(tmp_path):
    ck = make_checkpoint(create_model("shufflenet_v2", 7), "shufflenet_v2", model_args("shufflenet_v2", 7), CLASSES_7)
    del ck["mean"]
    torch.save(ck, tmp_path / "old.pt")
    with pytest.raises(FerError, match="missing mean"):
        load_checkpoint(tmp_path / "old.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(FerError, match="not a readable PyTorch file"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save(create_model("shufflenet_v2", 7).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(FerError, match="not a fercli checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FerError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt")
