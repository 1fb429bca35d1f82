"""The model registry: shapes at several sizes, PDWRes semantics, cost vs Table 4, initialisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from fercli.bench import count_cost, paper_table
from fercli.checkpoint import make_checkpoint, save_checkpoint
from fercli.errors import FerError
from fercli.models import PDWRes, build_model, create_model, imagenet_weights_file, list_models, model_args
from fercli.transforms import check_input_size, get_preset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_at_several_sizes(name):
    torch.manual_seed(0)
    model = create_model(name, 7).eval()
    with torch.no_grad():
        for size in (48, 64, 112):
            assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    assert create_model(name, 8).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 8)


def test_students_run_at_224_and_in_train_mode():
    for name in list_models("student"):
        model = create_model(name, 7)
        assert model.train()(torch.randn(2, 3, 224, 224)).shape == (2, 7)


@pytest.mark.parametrize("size", [0, 40, 50, 100, 223, True, 64.0])
def test_unsupported_sizes_are_refused(size):
    with pytest.raises(FerError, match="multiple of 16"):
        check_input_size(size)


def test_pdwres_forward_refuses_a_size_it_cannot_split():
    model = create_model("lfer", 7).eval()
    with pytest.raises(FerError, match="multiple of 16"):
        model(torch.randn(1, 3, 40, 40))


def _random_pdwres() -> PDWRes:
    torch.manual_seed(0)
    m = PDWRes(29, 116)
    for bn in (m.branch[1], m.branch[4]):  # non-trivial BN statistics so every channel differs
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


QUADRANTS = [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize("quadrant", QUADRANTS)
def test_pdwres_changing_one_quadrant_changes_only_its_output_quadrant(quadrant):
    m = _random_pdwres()
    f1 = torch.randn(1, 29, 56, 56)
    r, c = quadrant
    g1 = f1.clone()
    g1[:, :, r * 28:(r + 1) * 28, c * 28:(c + 1) * 28] += torch.randn(1, 29, 28, 28)
    with torch.no_grad():
        a, b = m.branch_output(f1), m.branch_output(g1)
    assert a.shape == (1, 116, 28, 28)
    for rr, cc in QUADRANTS:
        block = (slice(None), slice(None), slice(rr * 14, (rr + 1) * 14), slice(cc * 14, (cc + 1) * 14))
        if (rr, cc) == quadrant:
            assert not torch.equal(a[block], b[block])
        else:
            # no leakage across the quadrant border: each quadrant is zero-padded on its own
            assert torch.equal(a[block], b[block])


def test_pdwres_equals_four_separate_depthwise_branches():
    """The fused grouped convolution is exactly four convs with separate weights per quadrant."""
    m = _random_pdwres()
    f1 = torch.randn(2, 29, 56, 56)
    conv1, bn1, _, conv2, bn2, _ = m.branch
    outs = []
    with torch.no_grad():
        for q, (r, c) in enumerate(QUADRANTS):
            x = f1[:, :, r * 28:(r + 1) * 28, c * 28:(c + 1) * 28]
            s = slice(q * 116, (q + 1) * 116)
            y = nn.functional.conv2d(x, conv1.weight[s], stride=2, padding=1, groups=29)
            y = nn.functional.batch_norm(y, bn1.running_mean[s], bn1.running_var[s], bn1.weight[s], bn1.bias[s], eps=bn1.eps)
            y = nn.functional.relu6(y)
            y = nn.functional.conv2d(y, conv2.weight[s], padding=1, groups=116)
            y = nn.functional.batch_norm(y, bn2.running_mean[s], bn2.running_var[s], bn2.weight[s], bn2.bias[s], eps=bn2.eps)
            outs.append(nn.functional.relu6(y))
        reference = torch.cat([torch.cat(outs[:2], dim=3), torch.cat(outs[2:], dim=3)], dim=2)
        fused = m.branch_output(f1)
        stage2 = torch.randn(2, 116, 28, 28)
        assert torch.allclose(fused, reference, atol=1e-6)
        assert torch.allclose(m(f1, stage2), stage2 + reference, atol=1e-6)
    # separate weights: 4 quadrants x (116 x 9 + 116 x 9 + 2 BN x 2 x 116) = 10,208 parameters
    assert sum(p.numel() for p in m.parameters()) == 10_208


def test_pdwres_needs_a_channel_multiple():
    with pytest.raises(FerError, match="29"):
        create_model("lfer", 7, stem_channels=24)


def test_cost_matches_table4_within_tolerance():
    rep = paper_table()
    assert rep["all_ok"], rep
    by_model = {r["model"]: r for r in rep["rows"]}
    assert by_model["shufflenet_v2"]["params_m"] == pytest.approx(1.260779)  # torchvision's own count
    branch = rep["increments"][-1]
    assert abs(branch["d_flops_m"] - 3.09) <= 1.0
    assert all(r["counters_agree"] for r in rep["rows"])


def test_counting_convention_by_hand():
    """Conv2d + Linear MACs of a tiny net, checked against arithmetic."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    c = count_cost(net, 16)
    assert c["macs"] == 3 * 4 * 9 * 256 + 4 * 9 * 256 + 4 * 2
    assert c["flops"] == 2 * c["macs"] and c["counters_agree"]


def test_registry_errors():
    with pytest.raises(FerError, match="registered models: .*lfer"):
        create_model("lferr", 7)
    with pytest.raises(FerError, match="unknown model argument"):
        create_model("lfer", 7, width=2)
    with pytest.raises(FerError, match="num_classes"):
        create_model("lfer", 1)
    assert model_args("lfer", 7) == {"num_classes": 7, "stem_channels": 29, "head": "mish", "pdwres": True, "head_hidden": 22}


def test_eval_preset_turns_an_image_into_a_normalised_tensor():
    pre = get_preset("eval", input_size=64)
    rgb = torch.randint(0, 256, (100, 80, 3), dtype=torch.uint8).numpy()
    x = pre(rgb)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert torch.allclose(pre(rgb[:, :, ::-1].copy(), bgr=True), x)
    flat = pre(torch.full((64, 64, 3), 255, dtype=torch.uint8).numpy())
    assert torch.allclose(flat[:, 0, 0], (1 - torch.tensor(pre.mean)) / torch.tensor(pre.std))
    assert pre(rgb[:, :, 0]).shape == (3, 64, 64)  # grayscale
    with pytest.raises(FerError, match="multiple of 16"):
        get_preset("eval", input_size=50)


# ---- initialisation ------------------------------------------------------------------------------
@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _cache(name: str, state: dict) -> Path:
    _, _, path = imagenet_weights_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_missing_imagenet_weights_name_the_file_and_where_to_put_it(torch_home):
    with pytest.raises(FerError) as exc:
        build_model("lfer", 7, pretrained="imagenet", download=False)
    msg = str(exc.value)
    assert "shufflenetv2_x1-5666bf0f80.pth" in msg
    assert str(torch_home / "hub" / "checkpoints" / "shufflenetv2_x1-5666bf0f80.pth") in msg


def test_imagenet_weights_map_into_the_widened_student(torch_home):
    torch.manual_seed(0)
    tv = torchvision.models.shufflenet_v2_x1_0()  # stands in for the ImageNet file (same names and shapes)
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    _cache("lfer", tv.state_dict())
    model, report = build_model("lfer", 7, pretrained="imagenet", download=False)
    src = tv.state_dict()
    assert "stage3.0.branch1.0.weight" in report.loaded
    assert torch.equal(model.state_dict()["stage4.3.branch2.3.weight"], src["stage4.3.branch2.3.weight"])
    widened = {w.split(":")[0] for w in report.widened}
    assert {"conv1.0.weight", "conv1.1.weight", "stage2.0.branch2.0.weight", "stage2.0.branch1.2.weight"} <= widened
    reinit = " ".join(report.reinitialised)
    assert "pdwres.branch.0.weight" in reinit and "head.classifier.weight" in reinit
    assert "fc.weight" in report.unused  # ImageNet's 1000-class classifier
    st = model.state_dict()
    assert torch.equal(st["conv1.0.weight"][:24], src["conv1.0.weight"])
    assert torch.count_nonzero(st["stage2.0.branch2.0.weight"][:, 24:]) == 0
    # Zeroed input weights for the 5 new Conv1 channels: Stage2 computes what ImageNet's network did.
    model.eval(), tv.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.stage2(model.maxpool(model.conv1(x)))
        theirs = tv.stage2(tv.maxpool(tv.conv1(x)))
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert "widened" in report.summary() and "re-initialised" in report.summary()


def test_imagenet_weights_for_a_teacher(torch_home):
    tv = torchvision.models.resnet18()
    _cache("resnet18", tv.state_dict())
    model, report = build_model("resnet18", 7, pretrained="imagenet", download=False)
    assert sorted(r.split(" ")[0] for r in report.reinitialised) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], tv.state_dict()["layer4.1.conv2.weight"])


def test_corrupt_cached_weights_are_a_clear_error(torch_home):
    _, name, path = imagenet_weights_file("resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(FerError, match="delete it"):
        build_model("resnet18", 7, pretrained="imagenet", download=False)


def test_init_from_a_checkpoint_with_other_classes(tmp_path):
    src = create_model("lfer", 8)
    ck = make_checkpoint(src, "lfer", model_args("lfer", 8), [f"c{i}" for i in range(8)], 64)
    save_checkpoint(tmp_path / "eight.pt", ck)
    model, report = build_model("lfer", 7, init=tmp_path / "eight.pt")
    assert any(r.startswith("head.classifier.weight") for r in report.reinitialised)
    assert torch.equal(model.state_dict()["pdwres.branch.0.weight"], src.state_dict()["pdwres.branch.0.weight"])
    with pytest.raises(FerError, match="either"):
        build_model("lfer", 7, init=tmp_path / "eight.pt", pretrained="imagenet")


def test_init_from_an_unrelated_checkpoint_is_refused(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(FerError, match="no tensor fits"):
        build_model("lfer", 7, init=tmp_path / "other.pt")


def test_student_trains_on_a_batch_of_one():
    """The head's BatchNorm sees one value per channel; a last batch of one image must still train."""
    model = create_model("lfer", 7).train()
    before = model.head.bn.running_mean.clone()
    loss = model(torch.randn(1, 3, 48, 48)).logsumexp(1).sum()
    loss.backward()
    assert model.head.pw.weight.grad is not None
    assert torch.equal(model.head.bn.running_mean, before)
