"""The losses against values computed by hand."""

import math

import pytest
import torch

from fercli.losses import LFERLoss, LossConfig, combo_loss, dice, kl_divergence, weighted_ce


def test_kl_by_hand():
    # Q = softmax(log q) = q exactly; P = (0.5, 0.5, 0), Q = (0.25, 0.25, 0.5).
    logits = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    p = torch.tensor([[0.5, 0.5, 0.0]])
    per_sample = 0.5 * math.log(0.5 / 0.25) * 2  # = ln 2; the P = 0 term contributes 0
    assert kl_divergence(logits, p, "batchmean").item() == pytest.approx(per_sample, rel=1e-6)
    assert kl_divergence(logits, p, "paper").item() == pytest.approx(per_sample / 3, rel=1e-6)  # / (N x C)
    assert kl_divergence(logits, torch.softmax(logits, 1)).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        kl_divergence(logits, p, "sum")


def test_weighted_ce_beta_weighting_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    t = torch.tensor([[1.0, 0.0, 0.0]])
    pos, neg = math.log(0.7), math.log(0.8) + math.log(0.9)
    for beta in (0.0, 0.2, 0.5, 1.0):
        expected = -(beta * pos + (1 - beta) * neg) / 3  # mean over N=1 sample and C=3 classes
        assert weighted_ce(probs, t, beta).item() == pytest.approx(expected, rel=1e-6)
    # beta < 0.5 penalises a false positive (mass on a wrong class) more than beta > 0.5 does
    fp = torch.tensor([[0.5, 0.5, 0.0]])
    assert (weighted_ce(fp, t, 0.2) - weighted_ce(probs, t, 0.2)) > (weighted_ce(fp, t, 0.8) - weighted_ce(probs, t, 0.8))


def test_dice_with_eps_one_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected = (2 * (0.7 + 0.3) + 1) / (2 + 2 + 1)
    assert dice(probs, t).item() == pytest.approx(expected, rel=1e-6)
    assert dice(probs, t, eps=0.0).item() == pytest.approx(2 * 1.0 / 4, rel=1e-6)


def test_combo_loss_composition():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
    labels = torch.tensor([0, 2])
    probs = torch.softmax(logits, 1)
    t = torch.nn.functional.one_hot(labels, 3).float()
    expected = 0.5 * weighted_ce(probs, t, 0.2) - 0.5 * dice(probs, t, 1.0)
    assert combo_loss(logits, labels, 0.5, 0.2).item() == pytest.approx(expected.item(), rel=1e-6)
    assert combo_loss(logits, labels, 1.0, 0.2).item() == pytest.approx(weighted_ce(probs, t, 0.2).item(), rel=1e-6)


def test_total_loss_and_gradients():
    logits = torch.randn(4, 7, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3])
    target = torch.softmax(torch.randn(4, 7), 1)
    loss = LFERLoss(LossConfig(kl_weight=2.0))
    total, parts = loss(logits, labels, target)
    assert set(parts) == {"combo", "kl"}
    assert total.item() == pytest.approx(parts["combo"] + 2.0 * parts["kl"], rel=1e-5)
    total.backward()
    assert torch.isfinite(logits.grad).all()
    total_ce, parts_ce = LFERLoss(LossConfig(loss="ce"))(logits, labels)
    assert set(parts_ce) == {"ce"}
    assert total_ce.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)
    # out-of-range options are refused by the stage config, before any data (tests/test_recipe.py)
