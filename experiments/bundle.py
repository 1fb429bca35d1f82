"""Ship the result: the best FERPlus LFER-LDL student becomes fercli's bundled default model.

The candidate runs are every ``lfer`` + teacher-LDL run of the study: the ablation's ``lfer_ldl``
seeds and the budget's longer ``lfer_ldl`` runs. The one with the best *holdout* accuracy is chosen
(FERPlus valid, the report split, plays no part in the choice). It is exported with
``fer export --format checkpoint --half`` (float16 weights, no optimiser state), scored on FERPlus
valid with ``fer eval`` (8 and 7 classes), and copied to fercli/weights/. docs/MODEL_CARD.md quotes
experiments/results/bundled.json, which this writes.

    python experiments/bundle.py
"""

from __future__ import annotations

import shutil

import _common as c

from fercli.checkpoint import load_checkpoint
from fercli.fileio import atomic_path, sha256_file
from fercli.inference import BUNDLED_MODEL

# The first bundled model (the paper protocol's). It keeps its own file name: since the recipe study's
# model (bundle_recipe.py) became the package default, this script must never write over that one.
FIRST_MODEL = BUNDLED_MODEL.parent / "ferplus8_lfer_ldl_fp16.pt"

CANDIDATES = (("ablation", "lfer_ldl-s*"), ("budget", "lfer_ldl-e*"))
RECIPE_KEYS = ("epochs", "batch_size", "lr", "lr_step", "lr_gamma", "weight_decay", "seed", "beta", "input_size")


def candidates() -> dict[str, dict]:
    """``experiment/run`` -> result JSON of every finished LDL run."""
    return {f"{exp}/{p.stem}": c.read_result(p) for exp, pattern in CANDIDATES
            for p in sorted((c.RESULTS / exp).glob(f"{pattern}.json"))}


def run() -> dict:
    """Choose, export, score and install the bundled model; write results/bundled.json."""
    runs = candidates()
    if not runs:
        raise SystemExit("no finished lfer_ldl runs: run experiments/ablation.py first")
    name = max(runs, key=lambda k: runs[k]["train"]["best_val_acc"])
    done = c.read_result(c.RESULTS / "bundled.json")
    if (done and done["source_run"] == name and "recipe" in done and FIRST_MODEL.is_file()
            and sha256_file(FIRST_MODEL) == done["sha256"]):
        c.log.info("bundled model already from %s (sha256 matches results/bundled.json); skipped", name)
        return done
    source = c.WS / "runs" / name / "best.pt"
    out = c.WS / "bundle" / FIRST_MODEL.name
    logfile = c.WS / "logs" / "bundle.log"
    export = c.fer("export", source, "--format", "checkpoint", "--half", "--out", out, "--json", logfile=logfile)
    scores = c.evaluate(out, out.parent, logfile)
    with atomic_path(FIRST_MODEL) as tmp:
        shutil.copyfile(out, tmp)
    size = FIRST_MODEL.stat().st_size
    ckpt = load_checkpoint(FIRST_MODEL)  # the recipe as the checkpoint itself records it
    result = {
        "file": FIRST_MODEL.relative_to(c.ROOT).as_posix(), "bytes": size,
        "sha256": sha256_file(FIRST_MODEL), "source_run": name,
        "source_command": runs[name]["command"],
        "recipe": {k: ckpt["config"][k] for k in RECIPE_KEYS},
        "best_epoch": runs[name]["train"]["best_epoch"],
        "candidates_holdout": {k: r["train"]["best_val_acc"] for k, r in runs.items()},
        "source_ferplus_valid_8": runs[name]["ferplus_valid_8"]["accuracy"],
        "export": {k: export[k] for k in ("format", "max_abs_diff", "parity")},
        "commands": [f"fer export {source.relative_to(c.WS)} --format checkpoint --half --out {out.relative_to(c.WS)}",
                     "fer eval data/ferplus8.parquet --model bundle/... --split test (and ferplus7 with --map)"],
        **scores,
    }
    c.write_result(c.RESULTS / "bundled.json", result)
    c.log.info("bundled %s from %s: FERPlus valid %.4f (8), %.4f (7); %.2f MB", result["file"], name,
               scores["ferplus_valid_8"]["accuracy"], scores["ferplus_valid_7"]["accuracy"], size / 1e6)
    return result


def task(after: list[str]) -> c.Task:
    """Bundling once the runs named in ``after`` (the LDL candidates) are done."""
    return c.Task("bundle", run, tuple(after))


def main() -> None:
    c.parser(__doc__).parse_args()
    c.setup_logging()
    run()


if __name__ == "__main__":
    main()
