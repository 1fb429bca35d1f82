"""Which students make the recipe study's ensemble of teachers, chosen on the holdout; and what it scores.

Every student on disk (the runs of experiments/recipe.py that still have weights, and the bundled files)
is run on the holdout (the stratified 10% of train every seed-0 run of the study held out) with flip
averaging, each at its own input size. Every ensemble of 2 to 4 of them averages its members'
probabilities; the best on holdout accuracy (fewer members on a tie) is what ``recipe.LABEL_SETS``
labels train with (``fer gen-labels --ensemble``). FERPlus valid is scored for the record only: the
members and the ensemble, so the report can say how far distillation could reach.

    python experiments/ensemble.py [--threads 1]

Writes experiments/results/recipe/ensemble.json.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import _common as c
import bundle_recipe
import numpy as np
import recipe
import torch

from fercli.checkpoint import load_checkpoint, model_from_checkpoint
from fercli.data import cache_dir_for, make_split
from fercli.fileio import sha256_file
from fercli.probability import mean_softmax
from fercli.schema import COL_LABEL, COL_PATH, read_manifest
from fercli.training import TrainConfig, prepare_data
from fercli.transforms import preset_from_meta
from fercli.workspace import Workspace

POOL: list[str | Path] = ["lfer_v4_128", "lfer_v4_128_rebal", "lfer_v4_128_bal",
                          *(recipe.WEIGHTS / f"ferplus8_lfer_{v}_fp16.pt" for v in ("v5", "v4", "v3", "ldl"))]
MAX_MEMBERS = 4
# the study's holdout: what every seed-0 run held out of train (the images only; no targets needed)
HOLDOUT = TrainConfig(manifest=c.MANIFEST8, seed=0, val_fraction=0.1, targets="none", workers=0)


def _path(member: str | Path) -> Path:
    return member if isinstance(member, Path) else c.WS / "runs" / recipe.EXP / member / "best.pt"


def _name(member: str | Path) -> str:
    return recipe._rel(member) if isinstance(member, Path) else f"{recipe.EXP}/{member}"


@torch.no_grad()
def member_probs(member: str | Path, ws: Workspace) -> dict[str, Any]:
    """Flip-averaged probabilities of one student on the holdout and on FERPlus valid, at its input size."""
    ckpt = load_checkpoint(_path(member))
    model, _ = model_from_checkpoint(ckpt)
    pre = preset_from_meta(ckpt)
    trained = (ckpt["config"].get("seed"), ckpt["config"].get("val_fraction"))
    if trained != (HOLDOUT.seed, HOLDOUT.val_fraction):
        raise SystemExit(f"{_path(member)}: trained with seed {trained[0]}, val_fraction {trained[1]}; its holdout is "
                         "not the study's, so drop it from POOL")
    hold = prepare_data(dataclasses.replace(HOLDOUT, input_size=pre.input_size), ws).valid
    m = read_manifest(c.MANIFEST8)
    rows = m.labelled(("test",))
    valid = make_split(m.root, rows[COL_PATH].tolist(), rows[COL_LABEL].to_numpy(), None, pre.input_size,
                       cache_dir_for(ws.root), ws.sha256(m.path), 0)

    def probs(split: Any) -> np.ndarray:  # flip-averaged, as gen-labels --flip labels train
        return mean_softmax(bundle_recipe.holdout_logits(model, split, pre))

    return {"holdout": probs(hold), "holdout_labels": hold.labels.numpy(), "valid": probs(valid),
            "valid_labels": valid.labels.numpy(), "input_size": pre.input_size, "sha256": sha256_file(_path(member))}


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    opts = p.parse_args()
    torch.set_num_threads(opts.threads)
    c.setup_logging()
    ws = Workspace(c.WS)
    pool = [mb for mb in POOL if _path(mb).is_file()]
    got = {}
    for mb in pool:
        got[_name(mb)] = member_probs(mb, ws)
        c.log.info("%s: holdout %.4f", _name(mb), (got[_name(mb)]["holdout"].argmax(1) == got[_name(mb)]["holdout_labels"]).mean())
    names = list(got)
    yh, yv = got[names[0]]["holdout_labels"], got[names[0]]["valid_labels"]
    if any((g["holdout_labels"] != yh).any() for g in got.values()):
        raise SystemExit("the members' holdouts differ")

    def acc(combo: tuple[str, ...], split: str, y: np.ndarray) -> float:
        return float((np.mean([got[n][split] for n in combo], axis=0).argmax(1) == y).mean())

    combos = [cb for k in range(1, MAX_MEMBERS + 1) for cb in itertools.combinations(names, k)]
    scored = sorted(({"members": list(cb), "holdout": acc(cb, "holdout", yh)} for cb in combos),
                    key=lambda r: (-r["holdout"], len(r["members"])))
    best = next(r for r in scored if len(r["members"]) > 1)
    best["ferplus_valid_8"] = acc(tuple(best["members"]), "valid", yv)
    result = {
        "experiment": recipe.EXP, "run": "ensemble", "holdout_images": int(len(yh)), "valid_images": int(len(yv)),
        "tta": "flip", "rule": "best holdout accuracy among 2-4 members (fewer on a tie)",
        "members": {n: {"sha256": g["sha256"], "input_size": g["input_size"], "holdout": acc((n,), "holdout", yh),
                        "ferplus_valid_8": acc((n,), "valid", yv)} for n, g in got.items()},
        "chosen": best, "ensembles": scored[:20],
    }
    c.write_result(recipe.RESULTS / "ensemble.json", result)
    c.log.info("ensemble %s: holdout %.4f, FERPlus valid %.4f", " + ".join(best["members"]), best["holdout"],
               best["ferplus_valid_8"])


if __name__ == "__main__":
    main()
