"""The FERPlus study's runner (experiments/_common.py): scheduling, dependencies, the run lock."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import _common as c


def test_tasks_wait_for_what_they_need_and_failures_skip_dependants():
    order: list[str] = []
    lock = threading.Lock()

    def job(name: str, fail: bool = False, pause: float = 0.0):
        def run():
            time.sleep(pause)
            with lock:
                order.append(name)
            if fail:
                raise RuntimeError("boom")
            return name.upper()
        return run

    tasks = [c.Task("teacher", job("teacher", pause=0.2)), c.Task("a", job("a")),
             c.Task("ldl", job("ldl"), ("teacher",)), c.Task("bad", job("bad", fail=True)),
             c.Task("after-bad", job("after-bad"), ("bad",)), c.Task("b", job("b"))]
    done = c.run_tasks(tasks, jobs=2)
    assert done == {"teacher": "TEACHER", "a": "A", "ldl": "LDL", "b": "B"}
    assert order.index("ldl") > order.index("teacher") and "after-bad" not in order
    assert order.index("a") < order.index("teacher")  # the second thread did not wait for the teacher


def test_exclusive_makes_a_second_process_wait_and_takes_over_stale_locks(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(c, "WS", tmp_path)
    events: list[str] = []
    with c.exclusive("run"):
        t = threading.Thread(target=lambda: (c.exclusive("run", poll=0.05).__enter__(), events.append("second in")))
        # the same pid holds it, so the thread sees a live holder and waits
        t.start()
        time.sleep(0.3)
        events.append("first out")
    t.join(2)
    assert events == ["first out", "second in"]
    (tmp_path / "locks" / "run.lock").write_text("999999999 1")  # a dead process's lock
    with c.exclusive("run", poll=0.05):
        assert (tmp_path / "locks" / "run.lock").read_text().split()[0] == str(os.getpid())
    (tmp_path / "locks" / "run.lock").write_text(f"{os.getpid()} 1")  # our pid, but another start time: reused
    with c.exclusive("run", poll=0.05):
        assert (tmp_path / "locks" / "run.lock").read_text() == c._process_id(os.getpid())


def test_mean_std():
    assert c.mean_std([0.7]) == (0.7, 0.0)
    m, sd = c.mean_std([0.70, 0.72, 0.74])
    assert m == pytest.approx(0.72) and sd == pytest.approx(0.02)


def test_budget_fit_recovers_a_known_curve_and_refuses_to_invent_an_asymptote():
    import report

    true = lambda e: 0.88 - 0.9 * e ** -0.6  # noqa: E731 - a saturating curve with a known asymptote
    fit = report.fit_budget([20, 40, 60], [true(e) for e in (20, 40, 60)])
    sat = fit["saturating"]
    assert sat["asymptote"] == pytest.approx(0.88, abs=2e-3) and sat["c"] == pytest.approx(0.6, abs=0.02)
    assert sat["epochs_to_target"] == pytest.approx((0.9 / 0.04) ** (1 / 0.6), rel=0.05)
    # a concave curve: the log-linear reading is the optimistic one
    assert fit["loglinear"]["epochs_to_target"] < sat["epochs_to_target"]
    # points that do not bend over (gains growing per doubling) give no asymptote at all
    convex = report.fit_budget([20, 40, 60], [0.77, 0.78, 0.80])
    assert "saturating" not in convex and convex["loglinear"]["epochs_to_target"] > 60
    assert "saturating" not in report.fit_budget([20, 40, 60], [0.7386, 0.7788, 0.8004])  # asymptote > 100%
    # an asymptote below the target: never reached; falling accuracy: never reached either
    low = report.fit_budget([20, 40, 60], [0.80 - 0.5 * e ** -0.5 for e in (20, 40, 60)])
    assert low["saturating"]["epochs_to_target"] is None
    assert report.fit_budget([20, 60], [0.78, 0.77])["loglinear"]["epochs_to_target"] is None


# ---- the recipe study's report (issue 13): experiments/report_recipe.py and report_card.py ----------------

# a smoke run's JSONs (recipe.py and bundle_recipe.py with --limit): the real layouts, meaningless numbers
SAMPLE = Path(__file__).resolve().parent / "data" / "recipe_sample"
VARIANTS = ("shufflenet_v2", "shufflenet_v2_ldl", "lfer", "lfer_ldl")


def _blocks(text: str) -> dict[str, str]:
    import re

    return dict(re.findall(r"<!-- BEGIN (\S+) -->\n(.*?)\n<!-- END \1 -->", text, re.S))


def _sample_runs(seed1: bool = True) -> dict[str, dict]:
    """The sample JSONs, plus a seed 1 of every variant (seed 0 moved by +1 point for lfer*, -1 otherwise)."""
    import copy

    import report  # noqa: F401 - report_recipe imports its helpers
    import report_recipe as rr

    runs = rr.load(SAMPLE)
    for v in VARIANTS if seed1 else ():
        r = copy.deepcopy(runs[f"{v}-s0"])
        r.update(seed=1, run=f"{v}-s1")
        r["ferplus_valid_8"]["accuracy"] += 0.01 if v.startswith("lfer") else -0.01
        runs[f"{v}-s1"] = r
    return runs


def _robustness(clean: float) -> dict:
    names = ("gaussian_noise-3", "jpeg-2", "occlusion-2")
    per = {n: {"accuracy": clean - 0.05 * (i + 1), "mean_class_accuracy": 0.5, "drop": 0.05 * (i + 1)}
           for i, n in enumerate(names)}
    return {"clean": {"accuracy": clean, "mean_class_accuracy": 0.55, "macro_f1": 0.5}, "corruptions": per,
            "summary": {"mean_accuracy": clean - 0.1, "worst_accuracy": clean - 0.15, "worst": names[-1],
                        "mean_mean_class_accuracy": 0.5}, "model": {"arch": "lfer"}}


def test_recipe_sections_render_the_full_set_with_contrasts(tmp_path: Path):
    import report_recipe as rr

    runs = _sample_runs()
    blocks, contrasts = rr.results_blocks(runs, c.read_result(c.RESULTS / "teacher.json"), tmp_path)
    compare = blocks["recipe-compare"]
    for v in VARIANTS:
        assert f"| `{v}` |" in compare and "not run yet" not in compare
    assert "Missing" not in compare and "Every run: 3 epochs, the shared budget." in compare
    assert (tmp_path / "recipe_compare.png").stat().st_size > 0
    # the contrasts follow the numbers: lfer +1 point on seed 1, shufflenet_v2 -1 point
    k = contrasts["lfer - shufflenet_v2"]
    assert k["paired"] == pytest.approx({"0": 0.0, "1": 0.02}) and k["verdict"] == "ahead_within_spread"
    assert "`lfer` is 1.00 points above `shufflenet_v2` on average" in compare
    assert contrasts["shufflenet_v2_ldl - shufflenet_v2"]["verdict"] == "ahead_beyond_spread"
    assert contrasts["lfer_ldl - shufflenet_v2_ldl"]["verdict"] == "behind_beyond_spread"
    assert "`lfer_ldl` is 23.10 points below `shufflenet_v2_ldl`" in compare
    assert "in `shufflenet_v2_ldl`'s favour" in compare
    assert "| `lfer_mix` | 0.5 × votes + 0.5 × teacher | 3 (best 3) | 34.85 | 36.98 |" in blocks["recipe-candidates"]
    assert "**Bundled:** `recipe/lfer_mix`" in blocks["recipe-candidates"]
    assert "| 2×2 comparison | 8 of 8 | x86_64 CPU, 2 cores |" in blocks["recipe-cost"]
    assert "| `light`: per face, `torchvision.transforms.v2`" in blocks["recipe-protocol"]
    assert "| weight decay | 0.0001 | 0.0005 |" in blocks["recipe-protocol"]
    assert "| ResNet-18, the recipe | `strong` | 3 (best 3) |" in blocks["recipe-teacher"]


def test_recipe_sections_name_what_is_missing(tmp_path: Path):
    import report_recipe as rr

    runs = {k: v for k, v in _sample_runs(seed1=False).items()
            if k in ("teacher", "lfer-s0", "shufflenet_v2_ldl-s0", "lfer_votes")}
    blocks, contrasts = rr.results_blocks(runs, None, tmp_path)
    compare = blocks["recipe-compare"]
    assert "| `shufflenet_v2` | ShuffleNetV2 1.0x | single labels | not run yet |" in compare
    assert "| `lfer` | LFER (Conv1 29, PDWRes, Mish head) | single labels | 0 |" in compare
    assert ("Missing: `shufflenet_v2-s0`, `shufflenet_v2-s1`, `shufflenet_v2_ldl-s1`, `lfer-s1`, `lfer_ldl-s0` and "
            "`lfer_ldl-s1`") in compare
    assert {k: v["verdict"] for k, v in contrasts.items()} == {
        "lfer - shufflenet_v2": "missing", "lfer_ldl - shufflenet_v2_ldl": "missing",
        "shufflenet_v2_ldl - shufflenet_v2": "missing", "lfer_ldl - lfer": "missing"}
    assert "**LDL, on LFER** (`lfer_ldl` − `lfer`): not available yet" in compare
    assert "| `lfer_mix` | | | not run yet |" in blocks["recipe-candidates"]
    assert "Not bundled yet" in blocks["recipe-candidates"]
    assert "| 2×2 comparison | 2 of 8 |" in blocks["recipe-cost"]
    assert f"| bundled-model candidates | 1 of {len(rr.recipe.CANDIDATES)} |" in blocks["recipe-cost"]
    # nothing at all: every block still renders, no plot
    blocks, contrasts = rr.results_blocks({}, None, tmp_path / "empty")
    assert contrasts == {} and "Teacher not trained yet" in blocks["recipe-teacher"]
    assert blocks["recipe-compare"].count("not run yet") == 4 and not (tmp_path / "empty").exists()


def _fake(acc: dict[int, float]) -> dict[int, dict]:
    return {s: {"ferplus_valid_8": {"accuracy": a, "mean_class_accuracy": a / 2}} for s, a in acc.items()}


@pytest.mark.parametrize(("a", "b", "verdict", "words"), [
    ({0: .80, 1: .81}, {0: .75, 1: .76}, "ahead_beyond_spread", "`a` is 5.00 points above `b`"),
    ({0: .75, 1: .76}, {0: .80, 1: .81}, "behind_beyond_spread", "`a` is 5.00 points below `b`"),
    ({0: .80, 1: .82}, {0: .795, 1: .805}, "ahead_within_spread", "not resolved with 2 seeds"),
    ({0: .80, 1: .78}, {0: .79, 1: .79}, "mixed_signs", "The sign changes from seed to seed"),
    ({0: .80}, {0: .75}, "no_spread", "cannot be told from seed noise"),
    ({0: .80, 1: .80}, {0: .80, 1: .80}, "equal", "`a` is level with `b`"),
    ({0: .80}, {1: .75}, "no_common_seed", "No seed has been run for both"),
    ({}, {0: .75}, "missing", "not available yet"),
])
def test_contrast_verdicts_and_words_follow_the_numbers(a, b, verdict, words):
    import report_recipe as rr

    k = rr.contrast(_fake(a), _fake(b))
    assert k["verdict"] == verdict
    assert words in rr.contrast_text("a", "b", "what", k)


def test_target_table_marks_met_and_not_met():
    import copy

    import report_card

    b = _sample_runs(seed1=False)["bundled"]
    assert [t["met"] for t in report_card.targets(b)] == [False, False, False, False, None, True]
    table = report_card.targets_block(b)
    assert "| mean accuracy over the robustness suite | ≥ 75% | — | not measured |" in table
    assert "| file size | ≤ 3 MB | 2.72 MB | **met** |" in table and "1 of 6 targets met (1 not measured)." in table

    def at(accuracy, mca, recall, ece, robust, size):
        x = copy.deepcopy(b)
        e8 = x["ferplus_valid_8"]
        e8.update(accuracy=accuracy, mean_class_accuracy=mca, ece=ece)
        for p in e8["per_class"].values():
            p["recall"] = 0.9
        e8["per_class"]["contempt"]["recall"] = recall
        x["robustness"] = {"new": _robustness(0.9), "previous": _robustness(0.8)}
        x["robustness"]["new"]["summary"]["mean_accuracy"] = robust
        x["bytes"] = size
        return [t["met"] for t in report_card.targets(x)]

    assert at(0.85, 0.65, 0.25, 0.03, 0.75, 3_000_000) == [True] * 6  # the thresholds themselves are met
    assert at(0.8499, 0.6499, 0.2499, 0.0301, 0.7499, 3_000_001) == [False] * 6


def test_bundle_ranking_puts_floors_before_robustness_before_accuracy():
    import bundle_recipe as br

    def r(acc, mca, recall, robust):
        x = {"clean_accuracy": acc, "mean_class_accuracy": mca, "min_recall": recall, "mean_accuracy": robust}
        return {**x, "meets_floors": mca >= br.FLOORS["mean_class_accuracy"] and recall >= br.FLOORS["min_recall"],
                "meets_robustness": robust >= br.ROBUST_FLOOR}

    accurate_fragile = r(0.86, 0.70, 0.30, 0.74)
    robust = r(0.84, 0.70, 0.30, 0.76)
    no_rare_classes = r(0.88, 0.60, 0.30, 0.80)
    ranked = sorted([no_rare_classes, accurate_fragile, robust], key=br.rank_key, reverse=True)
    assert ranked == [robust, accurate_fragile, no_rare_classes]
    # a tie with the current bundled model does not ship a new file: ranking strictly above is required
    assert not br.rank_key(robust) > br.rank_key(dict(robust))
    assert br.rank_key(r(0.8401, 0.70, 0.30, 0.76)) > br.rank_key(robust)


def test_model_card_for_the_new_model_keeps_the_previous_one_as_a_note(tmp_path: Path):
    import copy

    import report
    import report_card

    b = copy.deepcopy(_sample_runs(seed1=False)["bundled"])
    b["robustness"] = {"new": _robustness(0.86), "previous": _robustness(0.80)}
    old = c.read_result(c.RESULTS / "bundled.json")
    card = report_card.model_card(report.CARD.read_text(), b, old, tmp_path)
    blocks = _blocks(card)
    assert "card" not in blocks and set(report_card.card_blocks(b, old, tmp_path)) <= set(blocks)
    assert "| neutral | 1180 | 36.98 | 100.00 | 53.99 |" in blocks["v2-valid"]  # precision, recall, F1
    assert "| before (T = 1) | 1 | 0.2187 | 1.9995 |" in blocks["v2-calibration"]
    assert "| after (T fitted on the holdout) | 0.178 | 0.0789 | 1.8535 |" in blocks["v2-calibration"]
    assert "| clean | 86.00 | 55.00 | 80.00 | +6.00 |" in blocks["v2-robustness"]
    assert "| **mean over the corruptions** | 76.00 |" in blocks["v2-robustness"]
    assert "| 0 | 34.85 | +0.00 | 12.50 | 0.00 | **chosen** |" in blocks["v2-choice"]
    assert "| `lfer_mix` (chosen) | 34.85 |" in blocks["v2-choice"] and "TTA" in blocks["v2-choice"]
    assert "| mean accuracy over the robustness suite | ≥ 75% | 76.00% | **met** |" in blocks["v2-targets"]
    assert "`ferplus8_lfer_ldl_fp16.pt`" in blocks["v2-previous"] and "81.76% (8 classes)" in blocks["v2-previous"]
    assert "python experiments/bundle_recipe.py" in blocks["v2-commands"]
    assert all((tmp_path / f).stat().st_size > 0 for f in ("recipe_confusion.png", "recipe_robustness.png"))
    # once the card is the new one, only its blocks are regenerated: hand edits stay
    assert report_card.model_card(card, b, old, tmp_path) == card
    edited = card.replace("## Intended use\n", "## Intended use\n\nA hand-written note.\n")
    assert "A hand-written note." in report_card.model_card(edited, b, old, tmp_path)
    # the default it replaces, when measured, comes first, beside the first bundled model
    b["robustness"]["replaced"] = _robustness(0.83)
    b["replaced"] = {"file": "ferplus8_lfer_v4_fp16.pt", "sha256": "0" * 64}
    block = report_card.robustness_block(b, tmp_path)
    assert "| `ferplus8_lfer_v4_fp16.pt`: accuracy (%) | new − it (points) | `ferplus8_lfer_ldl_fp16.pt`:" in block
    assert "| clean | 86.00 | 55.00 | 83.00 | +3.00 | 80.00 | +6.00 |" in block
    del b["robustness"]
    assert "Not measured" in report_card.robustness_block(b, tmp_path)


def test_report_regenerates_the_committed_docs_unchanged(tmp_path: Path):
    """docs/ are a fixed point of report.py on the committed JSONs (plots go to tmp_path)."""
    import json

    import report

    text, card, summary = report.render(img=tmp_path)
    assert text == report.DOC.read_text()
    assert card == report.CARD.read_text()
    assert summary == json.loads((c.RESULTS / "summary.json").read_text())


def test_recipe_results_change_only_the_recipe_sections(tmp_path: Path):
    import shutil

    import report

    doc, card = report.DOC.read_text(), report.CARD.read_text()
    text, new_card, summary = report.render(img=tmp_path / "img", recipe_results=SAMPLE)
    before, after = _blocks(doc), _blocks(text)
    assert before.keys() == after.keys()
    changed = {k for k in before if before[k] != after[k]}
    assert changed and all(k.startswith("recipe-") for k in changed)
    assert "v2-targets" in _blocks(new_card) and "recipe_contrasts" in summary
    # without bundled.json the card stays as it is
    partial = tmp_path / "partial"
    shutil.copytree(SAMPLE, partial)
    (partial / "bundled.json").unlink()
    (partial / "lfer_mix.json").unlink()
    text, same_card, _ = report.render(img=tmp_path / "img", recipe_results=partial)
    assert same_card == card and "| `lfer_mix` | | | not run yet |" in text


def test_recipe_makes_a_label_set_only_for_runs_still_to_do(tmp_path: Path, monkeypatch):
    """A label set (e.g. the ensemble's) is a task only while a run that needs it has no result; it waits for the
    study's runs its teachers come from, and the runs wait for it."""
    import recipe

    monkeypatch.setattr(recipe, "RESULTS", tmp_path)
    workers = {"teacher": 0, "candidate": 0, "compare": 0}

    def needs(groups: set[str]) -> dict[str, tuple[str, ...]]:
        return {t.name: t.needs for t in recipe.tasks(groups, [0], 20, 60, 30, "cpu", workers)}

    todo = needs({"candidates", "finetune"})
    assert todo["ensemble-labels"] == ("lfer_v4_128",) and todo["self-labels"] == ("lfer_up96",)
    assert todo["lfer_ens96"] == ("ensemble-labels",) and "ensemble-labels" in todo["lfer_v4_128_ens"]
    assert list(todo).index("ensemble-labels") < list(todo).index("lfer_ens96")
    assert needs({"candidates"})["ensemble-labels"] == ()  # lfer_v4_128 is not run by this invocation
    for run in [r for r, key in recipe.NEEDS_LABELS.items() if key == "ensemble-labels"]:
        (tmp_path / f"{run}.json").write_text('{"done": true}')
    done = needs({"candidates", "finetune"})
    assert "ensemble-labels" not in done and done["lfer_ens96"] == () and "self-labels" in done


def test_recipe_runs_keeps_the_named_runs_and_what_they_wait_for(tmp_path: Path, monkeypatch):
    """``--runs`` narrows a group to the runs named, plus the label sets and base runs they wait for; a name
    the groups do not hold is one line, not a silent no-op."""
    import recipe

    monkeypatch.setattr(recipe, "RESULTS", tmp_path)
    workers = {"teacher": 0, "candidate": 0, "compare": 0}

    def names(runs: set[str]) -> list[str]:
        return [t.name for t in recipe.tasks({"finetune"}, [0], 20, 60, 30, "cpu", workers, runs)]

    assert names({"lfer_v7_ens_rebal"}) == ["bundled-ensemble-labels", "lfer_v7_ens", "lfer_v7_ens_rebal"]
    assert names({"lfer_v7_nat"}) == ["lfer_v7_nat"]  # no label set: its targets are the crowd votes
    (tmp_path / "lfer_v7_ens.json").write_text('{"done": true}')  # finished: its labels are not remade
    assert names({"lfer_v7_ens_rebal"}) == ["lfer_v7_ens", "lfer_v7_ens_rebal"]
    with pytest.raises(SystemExit, match="no run lfer_ens96 in --only finetune"):
        names({"lfer_ens96"})  # a candidate, not a fine-tune


def test_bundle_choice_weighs_tta_with_alpha_and_tau():
    """TTA is part of the operating point: flip is chosen where it gives the best accuracy at the floors, even
    when it loses at tau = 0; on a tie, no TTA (half the cost of a face)."""
    import bundle_recipe as br

    def point(tau, acc, mca=0.70, recall=0.30):
        return {"tau": tau, "accuracy": acc, "mean_class_accuracy": mca, "min_recall": recall}

    def entry(alpha, tta, curve):
        return {"alpha": alpha, "tta": tta, "curve": curve}

    plain = entry(1.0, "none", [point(0.0, 0.86, 0.60, 0.0), point(0.5, 0.83)])
    flip = entry(1.0, "flip", [point(0.0, 0.85, 0.60, 0.0), point(0.5, 0.84)])
    g, p, rule = br.choose_point([plain, flip])
    assert (g["tta"], p["tau"], p["accuracy"]) == ("flip", 0.5, 0.84) and "holdout mean class accuracy >=" in rule
    tie = entry(1.0, "flip", [point(0.0, 0.85, 0.60, 0.0), point(0.5, 0.83)])
    assert br.choose_point([tie, plain])[0]["tta"] == "none"
    # no TTA wins a tie in accuracy before a smaller |tau| does
    near = entry(1.0, "flip", [point(0.0, 0.86, 0.60, 0.0), point(0.25, 0.83)])
    assert br.choose_point([near, plain])[:2] == (plain, plain["curve"][1])
    # no point reaches the floors: the largest alpha, with the TTA that is more accurate at tau = 0
    below = [entry(a, t, [point(0.0, acc, 0.5, 0.0), point(0.5, acc - 0.005, 0.55, 0.1)])
             for a, t, acc in ((0.5, "flip", 0.9), (1.0, "none", 0.85), (1.0, "flip", 0.86))]
    g, p, rule = br.choose_point(below)
    assert (g["alpha"], g["tta"], p["tau"]) == (1.0, "flip", 0.5) and "within" in rule


def test_head_retrain_trains_only_the_part_asked_for():
    """Classifier re-training leaves the rest of the head as trained; whole-head re-training moves it; the
    original head is never modified."""
    import head_retrain as hr
    import torch

    from fercli.models.shufflenet_fer import MishDWSHead

    torch.manual_seed(0)
    head = MishDWSHead(16, 3, hidden=4).eval()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    feats = torch.randn(64, 16).numpy()
    labels = torch.arange(64).remainder(3).numpy()
    targets = torch.nn.functional.one_hot(torch.from_numpy(labels), 3).float().numpy()
    cls_only = hr.retrain(head, feats, targets, labels, "classifier", 1.0).state_dict()
    assert all(torch.equal(v, head.state_dict()[k]) for k, v in before.items())  # the original is untouched
    assert not torch.equal(cls_only["classifier.weight"], before["classifier.weight"])
    assert all(torch.equal(cls_only[k], before[k]) for k in before if not k.startswith("classifier."))
    whole = hr.retrain(head, feats, targets, labels, "head", 1.0).state_dict()
    assert not torch.equal(whole["pw.weight"], before["pw.weight"])
    assert hr.head_logits(hr.retrain(head, feats, targets, labels, "head", 0.0), feats).shape == (64, 3)
