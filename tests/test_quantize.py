"""`fer export --quantize`: int8 (static QDQ), int8-dynamic and fp16 ONNX files from a small trained
model: round trip, metadata, parity with float32 within the stated bounds, `fer eval` on the int8
file, `fer bench` on the variants, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _fab import make_pattern_folder
from fercli.classes import CLASSES_7
from fercli.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
# The bounds the tests hold the exports to (README, `fer export --quantize`): top-1 agreement with the
# float32 export on the calibration images, and the largest calibrated-probability difference.
BOUNDS = {"int8": (0.90, 0.30), "int8-dynamic": (0.85, 0.60), "fp16": (0.99, 0.01)}


def _cli():
    from fercli.cli import app

    return app


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 7-class pattern dataset (12 train, 4 valid images per class) and an lfer student trained on it
    for 8 epochs at 32 px (valid accuracy 1.0 when written: about 8 s), with a stored temperature (1.5)
    and tta (flip) to carry over."""
    from fercli.checkpoint import save_checkpoint
    from fercli.fileio import safe_torch_load
    from fercli.importers import ImportConfig, run_import
    from fercli.training import TrainConfig, run_train

    root = tmp_path_factory.mktemp("quant")
    ws = Workspace(root)
    make_pattern_folder(root / "raw", CLASSES_7, {"train": 12, "valid": 4}, size=SIZE)
    manifest = run_import(ImportConfig(format="folder", src=root / "raw"), ws).out
    torch.manual_seed(0)
    # no flip: the class is where the block is
    best = run_train(TrainConfig(arch="lfer", input_size=SIZE, epochs=8, batch_size=8, lr=0.02, flip=0.0, loss="ce",
                           workers=0, targets="none", threads=1), ws).best
    ckpt = safe_torch_load(best)
    ckpt.update(temperature=1.5, tta="flip")
    save_checkpoint(best, ckpt)
    return {"root": root, "manifest": Path(manifest), "student": Path(best)}


def _export(trained: dict[str, Path], out: str, **kw):
    from fercli.export import ExportConfig, run_export

    cfg = ExportConfig(out=trained["root"] / "export" / out, calib=kw.pop("calib", trained["manifest"]), calib_size=50, **kw)
    return run_export(cfg, Workspace(trained["root"]), trained["student"])[0]


@pytest.fixture(scope="module")
def exports(trained: dict[str, Path]) -> dict[str, Path]:
    out = {"float32": _export(trained, "model.onnx").path}
    for mode in ("int8", "int8-dynamic", "fp16"):
        out[mode] = _export(trained, f"model_{mode}.onnx", quantize=mode).path
    return out


def test_int8_round_trip_keeps_metadata_and_stays_within_parity_bounds(trained, exports):
    import onnx

    from fercli.export import read_export_meta
    from fercli.inference import Classifier

    fp32, int8 = read_export_meta(exports["float32"]), read_export_meta(exports["int8"])
    for key in ("classes", "input_size", "mean", "std", "temperature", "tta", "arch", "model_args"):
        assert int8[key] == fp32[key], key
    assert int8["temperature"] == 1.5 and int8["tta"] == "flip" and int8["classes"] == list(CLASSES_7)
    q = int8["quantization"]
    assert q["mode"] == "int8" and q["format"] == "QDQ" and "per channel" in q["weights"]
    cal = q["calibration"]
    assert cal["split"] == "train" and cal["images"] == 50 and cal["drawn_from"] == 7 * 12 and cal["seed"] == 0
    proto = onnx.load(str(exports["int8"]))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["quantization"] == "int8" and json.loads(props["classes"]) == list(CLASSES_7)
    assert props["temperature"] == "1.5" and props["tta"] == "flip"
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    assert exports["int8"].stat().st_size < 0.45 * exports["float32"].stat().st_size
    # the parity report beside the file, within the stated bounds
    side = json.loads(exports["int8"].with_name("model_int8.onnx.json").read_text())
    par = side["quantized_parity"]
    agree, prob = BOUNDS["int8"]
    assert par["images"] == 50 and par["top1_agreement"] >= agree and par["max_prob_diff"] <= prob
    assert side["provenance"]["inputs"]["student"]["sha256"] and side["parity"]["max_abs_diff"] < 1e-4
    # independently: both files through the Classifier on the valid images (never used for calibration)
    a, b = Classifier.load(exports["float32"]), Classifier.load(exports["int8"])
    assert b.temperature == 1.5 and b.tta == "flip" and b.preprocess.input_size == SIZE
    x = _valid_batch(trained)
    pa, pb = a.probs(x), b.probs(x)
    assert (pa.argmax(1) == pb.argmax(1)).mean() >= agree and np.abs(pa - pb).max() <= prob
    # dynamic batch survives quantisation
    assert b.logits(x[:1]).shape == (1, 7) and b.logits(x[:5]).shape == (5, 7)


def _valid_batch(trained: dict[str, Path]) -> torch.Tensor:
    from fercli.schema import read_manifest
    from fercli.transforms import decode_image

    m = read_manifest(trained["manifest"])
    rows = m.labelled(["valid"])
    u8 = np.stack([decode_image(m.root / p, SIZE) for p in rows["path"]])
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("mode", ["int8-dynamic", "fp16"])
def test_fp16_and_dynamic_int8_parity(trained, exports, mode):
    from fercli.export import read_export_meta

    meta = read_export_meta(exports[mode])
    side = json.loads(exports[mode].with_name(exports[mode].name + ".json").read_text())
    agree, prob = BOUNDS[mode]
    par = side["quantized_parity"]
    assert meta["quantization"]["mode"] == mode and meta["temperature"] == 1.5
    assert par["top1_agreement"] >= agree and par["max_prob_diff"] <= prob and par["inputs"] == "calibration images"
    assert exports[mode].stat().st_size < 0.6 * exports["float32"].stat().st_size


def test_fer_eval_scores_the_int8_file_like_any_export(runner, trained, exports):
    res = runner.invoke(_cli(), ["-w", str(trained["root"]), "eval", str(trained["manifest"]), "--model", str(exports["int8"]),
                                 "--split", "valid", "--tta", "none", "--workers", "0", "--json", "--out", str(trained["root"] / "eval_int8")])
    assert res.exit_code == 0, res.output
    q = json.loads(res.stdout)
    res = runner.invoke(_cli(), ["-w", str(trained["root"]), "eval", str(trained["manifest"]), "--model",
                                 str(exports["float32"]), "--split", "valid", "--tta", "none", "--workers", "0", "--json", "--out",
                                 str(trained["root"] / "eval_fp32")])
    f = json.loads(res.stdout)
    assert q["model"]["kind"] == "onnx" and q["images"] == 28 and q["temperature"] == 1.5 and q["tta"] == "none"
    # (the model recommends flip, which mirrors these position-coded patterns into other classes)
    assert f["accuracy"] >= 0.8 and abs(q["accuracy"] - f["accuracy"]) <= 0.08  # a trained model; 2 of 28 images


def test_quantising_an_onnx_export_and_the_cli_table(runner, trained, exports):
    out = trained["root"] / "export" / "from_onnx_fp16.onnx"
    res = runner.invoke(_cli(), ["-w", str(trained["root"]), "export", str(exports["float32"]), "--quantize", "fp16",
                                 "--calib", str(trained["manifest"]), "--calib-size", "50", "-o", str(out)],
                        env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "parity vs float32" in res.stdout and "top-1 agreement 1.0000" in res.stdout and out.is_file()
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["provenance"]["inputs"]["source"]["path"].endswith("model.onnx")
    assert side["provenance"]["inputs"]["student"]["sha256"]  # carried from the float32 export's sidecar


def test_excluding_the_first_conv_and_the_head(trained):
    import onnx

    res = _export(trained, "model_int8_ex.onnx", quantize="int8", quant_exclude=("first-conv", "head"))
    q = res.meta["quantization"]
    assert q["excluded"] == ["first-conv", "head"] and q["excluded_nodes"] >= 3
    proto = onnx.load(str(res.path))
    first = next(n for n in proto.graph.node if n.op_type == "Conv")
    inits = {i.name for i in proto.graph.initializer}
    assert first.input[1] in inits  # a float32 weight, not the output of a DequantizeLinear


def _manifest_8_classes(root: Path) -> Path:
    from fercli.classes import CLASSES_8
    from fercli.importers import ImportConfig, run_import

    make_pattern_folder(root / "raw8", CLASSES_8, {"train": 8}, size=SIZE)
    return Path(run_import(ImportConfig(format="folder", src=root / "raw8", out=root / "eight.parquet"), Workspace(root)).out)


def test_refusals_are_one_line(runner, trained, exports, tmp_path):
    app = _cli()
    root, student = trained["root"], str(trained["student"])
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((60, 48, 48, 3), np.uint8))
    few = tmp_path / "few.npy"
    np.save(few, np.zeros((40, SIZE, SIZE, 3), np.uint8))
    cases = [
        (["--quantize", "int8", "--calib", str(_manifest_8_classes(tmp_path))], "the manifest has 8 classes"),
        (["--quantize", "int8", "--calib", str(small)], "calibration images are 48x48 but the model takes 32x32"),
        (["--quantize", "int8", "--calib", str(few)], "40 calibration images; at least 50 are needed"),
        (["--quantize", "int8", "--calib-size", "20"], "--calib-size 20: at least 50 calibration images are needed"),
        (["--quantize", "int8", "--format", "torchscript"], "--quantize applies to --format onnx only (not torchscript)"),
        (["--quantize", "int4"], "--quantize 'int4' is not one of int8, int8-dynamic, fp16"),
        (["--quantize", "int8", "--quant-exclude", "nope"], "--quant-exclude 'nope' is neither a keyword"),
        (["--quantize", "int8", "--min-agreement", "1.5"], "--min-agreement"),
    ]
    for args, message in cases:
        res = runner.invoke(app, ["-w", str(root), "export", student, "-o", str(tmp_path / "x.onnx"), *args])
        assert res.exit_code == 1 and message in res.stderr, (args, res.output)
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0] == res.stderr.strip().splitlines()[-1] and not (tmp_path / "x.onnx").exists()
    # a manifest with fewer than 50 training images
    from fercli.importers import ImportConfig, run_import

    make_pattern_folder(tmp_path / "raw_few", CLASSES_7, {"train": 5}, size=SIZE)
    few_m = run_import(ImportConfig(format="folder", src=tmp_path / "raw_few", out=tmp_path / "few.parquet"),
                       Workspace(tmp_path)).out
    res = runner.invoke(app, ["-w", str(root), "export", student, "--quantize", "int8", "--calib", str(few_m), "-o",
                              str(tmp_path / "x.onnx")])
    assert res.exit_code == 1 and "35 labelled training images; at least 50 are needed" in res.stderr, res.output
    # quantising an already quantised file, of every kind
    for mode in ("int8", "int8-dynamic", "fp16"):
        res = runner.invoke(app, ["-w", str(root), "export", str(exports[mode]), "--quantize", "int8", "-o",
                                  str(tmp_path / "x.onnx")])
        assert res.exit_code == 1 and f"already quantised (fercli {mode})" in res.stderr, res.output
    # static int8 without any calibration images: a workspace without a dataset
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["-w", str(empty), "export", student, "--quantize", "int8", "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code == 1 and "--quantize int8 needs calibration images" in res.stderr, res.output
    # too strict a floor: nothing written
    res = runner.invoke(app, ["-w", str(root), "export", student, "--quantize", "int8-dynamic", "--min-agreement", "1",
                              "--calib-size", "50", "-o", str(tmp_path / "x.onnx")])
    if res.exit_code == 1:  # a dynamic int8 model rarely agrees on every image; when it does, it is written
        assert "nothing was written" in res.stderr and not (tmp_path / "x.onnx").exists()


def test_bench_times_the_quantised_variants_and_files(trained, exports):
    from fercli.bench import BenchConfig, run_bench

    rep = run_bench(BenchConfig(models=(str(trained["student"]), str(exports["float32"]), str(exports["int8"])),
                                batches=(1,), backends=("onnxruntime", "onnxruntime-int8", "onnxruntime-fp16"),
                                reps=2, min_reps=1, warmup=1, threads=1))
    rows = {(r["model"].split(" ")[0], r["backend"]): r for r in rep.latency}
    assert set(rows) == {("best.pt", "onnxruntime"), ("best.pt", "onnxruntime-int8"), ("best.pt", "onnxruntime-fp16"),
                         ("model.onnx", "onnxruntime"), ("model_int8.onnx", "onnxruntime")}
    assert rows[("best.pt", "onnxruntime")]["ort_speedup"] == 1.0
    assert rows[("model.onnx", "onnxruntime")]["ort_speedup"] == 1.0
    i8 = rows[("model_int8.onnx", "onnxruntime")]
    assert i8["quantization"] == "int8" and i8["ort_speedup"] == pytest.approx(
        rows[("model.onnx", "onnxruntime")]["median_ms"] / i8["median_ms"])
    assert i8["bytes"] == exports["int8"].stat().st_size < rows[("model.onnx", "onnxruntime")]["bytes"]
    assert rows[("best.pt", "onnxruntime-int8")]["bytes"] < rows[("best.pt", "onnxruntime")]["bytes"]
    assert [c["model"].split(" ")[0] for c in rep.cost] == ["best.pt"]  # ONNX files have no PyTorch graph to count


def test_openvino_runtime_matches_onnxruntime(runner, trained, exports):
    pytest.importorskip("openvino")
    from fercli.bench import BenchConfig, run_bench
    from fercli.inference import Classifier

    x = _valid_batch(trained)
    a = Classifier.load(exports["float32"])
    b = Classifier.load(exports["float32"], runtime="openvino", threads=1)
    assert np.abs(a.logits(x) - b.logits(x)).max() < 1e-4 and b.logits(x[:3]).shape == (3, 7)
    rep = run_bench(BenchConfig(models=(str(exports["float32"]),), batches=(1,), backends=("onnxruntime", "openvino"),
                                reps=2, min_reps=1, warmup=1, threads=1))
    assert {r["backend"] for r in rep.latency} == {"onnxruntime", "openvino"}
    res = runner.invoke(_cli(), ["-w", str(trained["root"]), "eval", str(trained["manifest"]), "--model", str(trained["student"]),
                                 "--runtime", "openvino", "--split", "valid", "--workers", "0"])
    assert res.exit_code == 1 and "runs exported .onnx files only" in res.stderr
