"""The report's metric functions on hand-made predictions (exact values), and `curate compare`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.evaluate import (
    compare_runs,
    compare_tsv,
    compute_metrics,
    frequency_correlation,
    frequency_groups,
    group_accuracy,
    per_class_accuracy,
    prediction_entropy,
    render_report,
    topk_accuracy,
    write_plots,
)

# six eval images, two per class; top-2 predictions, best first
LABELS = np.array([0, 0, 1, 1, 2, 2])
TOPK = np.array([[0, 1], [1, 0], [1, 2], [1, 0], [0, 2], [0, 1]])
TRAIN = np.array([100, 10, 1])


def test_topk_and_per_class_accuracy_exact() -> None:
    assert topk_accuracy(TOPK, LABELS, 1) == pytest.approx(3 / 6)
    # row 5 (label 2, predicted 0 then 1) is the only miss at k=2
    assert topk_accuracy(TOPK, LABELS, 2) == pytest.approx(5 / 6)
    acc = per_class_accuracy(TOPK[:, 0], LABELS, 4)
    assert acc[:3].tolist() == [0.5, 1.0, 0.0]
    assert math.isnan(acc[3])  # class 3 has no eval images


def test_frequency_correlation_exact() -> None:
    acc = np.array([0.5, 1.0, 0.0])
    corr = frequency_correlation(acc, TRAIN)
    logf = np.log(1 + TRAIN.astype(float))
    assert corr["pearson"] == pytest.approx(np.corrcoef(logf, acc)[0, 1])
    # ranks: log frequency (3, 2, 1), accuracy (2, 3, 1) -> 1 - 6 * 2 / (3 * 8) = 0.5
    assert corr["spearman"] == pytest.approx(0.5)
    # accuracy that follows frequency exactly in rank
    assert frequency_correlation(np.array([0.9, 0.5, 0.1, 0.0]), np.array([1000, 100, 10, 1]))["spearman"] == pytest.approx(1.0)


def test_correlation_is_undefined_on_constant_input_and_skips_classes_without_eval_images() -> None:
    assert frequency_correlation(np.array([0.2, 0.5, 0.9]), np.array([7, 7, 7]))["pearson"] is None
    assert frequency_correlation(np.array([0.5, 0.5, 0.5]), TRAIN)["spearman"] is None
    corr = frequency_correlation(np.array([0.9, np.nan, 0.5, 0.1]), np.array([1000, 500, 100, 1]))
    assert corr["spearman"] == pytest.approx(1.0)


def test_head_medium_tail_thirds() -> None:
    groups = frequency_groups(np.array([5, 1, 5, 1, 5, 1, 9]))
    # most frequent first, ties by class index; the head takes the remainder class
    assert [g.tolist() for g in groups.values()] == [[6, 0, 2], [4, 1], [3, 5]]
    acc = np.array([0.5, 0.0, 1.0, 0.2, 0.25, np.nan, 0.75])
    out = group_accuracy(acc, np.array([5, 1, 5, 1, 5, 1, 9]))
    assert out["head"] == pytest.approx(0.75)
    assert out["medium"] == pytest.approx(0.125)
    assert out["tail"] == pytest.approx(0.2)  # class 5 has no eval images


def test_prediction_entropy_exact() -> None:
    two_of_three = prediction_entropy(np.array([3, 3, 0]))
    assert two_of_three["entropy"] == pytest.approx(math.log(2))
    assert two_of_three["entropy_norm"] == pytest.approx(math.log(2) / math.log(3))
    assert prediction_entropy(np.array([4, 4, 4, 4]))["entropy_norm"] == pytest.approx(1.0)
    assert prediction_entropy(np.array([0, 12, 0]))["entropy"] == pytest.approx(0.0)


def test_compute_metrics_holds_every_number() -> None:
    m = compute_metrics(TOPK, LABELS, TRAIN)
    assert m["top1"] == pytest.approx(0.5)
    assert m["top5"] == pytest.approx(5 / 6)  # k caps at the two columns given
    assert m["mean_per_class_accuracy"] == pytest.approx(0.5)
    assert (m["head_accuracy"], m["medium_accuracy"], m["tail_accuracy"]) == (0.5, 1.0, 0.0)
    assert m["spearman_log_freq"] == pytest.approx(0.5)
    assert m["prediction_counts"] == [3, 3, 0]
    assert m["train_imbalance"] == pytest.approx(100.0)
    assert m["eval_counts"] == [2, 2, 2]
    # the head class is predicted most, the tail class never
    assert m["prediction_spearman_log_freq"] == pytest.approx(np.corrcoef([3, 2, 1], [2.5, 2.5, 1])[0, 1])


def _metrics_file(run: Path, *, objective: str, top1: float, pearson: float | None) -> None:
    m = compute_metrics(TOPK, LABELS, TRAIN)
    m.update(
        run=run.name,
        manifest="manifests/x",
        objective=objective,
        model="tiny",
        scoring="classifier",
        chance_top1=1 / 3,
        class_names=["dog", "cat", "fish"],
        training={"images_per_s": 1234.5, "steps": 10, "device": "cpu", "precision": "fp32"},
        top1=top1,
        pearson_log_freq=pearson,
    )
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "metrics.json").write_text(json.dumps(m))


def test_compare_lists_runs_side_by_side(tmp_path: Path) -> None:
    _metrics_file(tmp_path / "a-clip", objective="clip", top1=0.25, pearson=0.125)
    _metrics_file(tmp_path / "a-sl", objective="sl", top1=0.5, pearson=None)
    rows = compare_runs([tmp_path / "a-clip", tmp_path / "a-sl"])
    assert [r["objective"] for r in rows] == ["clip", "sl"]
    assert rows[0]["images_per_s"] == 1234.5
    tsv = compare_tsv(rows).splitlines()
    assert tsv[0].split("\t")[:6] == ["run", "dataset", "objective", "model", "train_imbalance", "top1"]
    assert tsv[1].split("\t")[5] == "0.25" and tsv[2].split("\t")[5] == "0.5"
    assert [r["dataset"] for r in rows] == ["heldout", "heldout"]  # a metrics.json without datasets: its own

    result = CliRunner().invoke(app, ["compare", str(tmp_path / "a-clip"), str(tmp_path / "a-sl")], terminal_width=250)
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if "a-clip" in ln or "a-sl" in ln]
    assert len(lines) == 2
    assert "25.0" in lines[0] and "+0.125" in lines[0] and "1234" in lines[0]
    assert "50.0" in lines[1] and "n/a" in lines[1]


def test_compare_and_eval_reject_folders_that_are_not_evaluated_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "run.json").write_text("{}")
    from curate.cli import main

    for argv, needle in (
        (["compare", str(tmp_path / "half")], "run `curate eval"),
        (["compare", str(tmp_path / "nothing")], "not a training run"),
        (["eval", str(tmp_path / "nothing")], "not a training run"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err


def test_report_and_plots_are_written(tmp_path: Path) -> None:
    m = compute_metrics(TOPK, LABELS, TRAIN)
    m.update(run="r", manifest="manifests/x", objective="sl", model="tiny", scoring="classifier",
             chance_top1=1 / 3, class_names=["dog", "cat", "fish"], training={})
    text = render_report(m)
    for needle in ("top-1 | 50.0%", "top-5 | 83.3%", "head third | 50.0%", "tail third | 0.0%",
                   "Spearman", "Pearson", "entropy", "| 0 | dog | 100 | 2 | 50.0% | 3 |"):
        assert needle in text, needle
    write_plots(tmp_path, m)
    for name in ("per_class_accuracy.png", "predictions.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- neural collapse


def test_neural_collapse_is_zero_on_a_collapsed_simplex() -> None:
    from curate.evaluate import neural_collapse

    k = 4
    etf = np.eye(k) - 1.0 / k  # a simplex ETF (rows centred, equal angles)
    etf /= np.linalg.norm(etf, axis=1, keepdims=True)
    labels = np.repeat(np.arange(k), 3)
    feats = etf[labels] * 2.0  # every image exactly at its class mean
    m = neural_collapse(feats, labels, etf, np.array([100, 50, 10, 1]))
    assert m["nc_within_between"] == pytest.approx(0.0, abs=1e-12)
    assert m["nc_cos_means"] == pytest.approx(0.0, abs=1e-12)
    assert m["nc_cos_weights_nearest"] == pytest.approx(0.0, abs=1e-12)
    # spread within classes and classifier rows that are not equiangular: both measures grow
    rng = np.random.default_rng(0)
    noisy = feats + rng.normal(scale=0.3, size=feats.shape)
    w = etf.copy()
    w[1] = w[0]  # two classes share a classifier direction: cos = 1, |1 + 1/3| for that pair
    m2 = neural_collapse(noisy, labels, w, np.array([100, 50, 10, 1]))
    assert m2["nc_within_between"] > 0.01
    assert m2["nc_cos_weights_per_class"][0] == pytest.approx((4 / 3 + 2 * abs(-1 / 3 + 1 / 3)) / 3)
    # tr(Sw Sb^+) by its definition, on the same data
    means = np.stack([noisy[labels == c].mean(0) for c in range(k)])
    centred = means - means.mean(0)
    sb = centred.T @ centred / k
    z = noisy - means[labels]
    sw = z.T @ z / len(labels)
    assert m2["nc_within_between"] == pytest.approx(np.trace(sw @ np.linalg.pinv(sb)), rel=1e-9)


# --------------------------------------------------------------------------- ImageFolder evaluation


def test_imagefolder_scores_match_a_hand_count(tmp_path: Path) -> None:
    """An ImageFolder of the held-out images (PNG, lossless, wnid folders) scored by `curate eval`
    gives the accuracy counted by hand from the model's own predictions; --classes scores the
    subset's images among the subset's classes only."""
    import torch
    from PIL import Image
    from test_train import NAMES, WNIDS, make_manifest

    from curate.loader import gpu_augment, open_shards
    from curate.runs import TrainConfig, load_trained
    from curate.train import train

    manifest = make_manifest(tmp_path / "toy")
    run = tmp_path / "run"
    train(manifest, TrainConfig(objective="sl", steps=6, batch_size=64, lr=2e-3), out=run)
    shards = open_shards(manifest, "eval")
    images = torch.from_numpy(np.asarray(shards.gather(np.arange(shards.num_samples))[0]))
    labels = np.asarray(shards.labels)
    folder = tmp_path / "val"
    for i, (img, y) in enumerate(zip(images.numpy(), labels)):
        (folder / WNIDS[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / WNIDS[y] / f"{i:04d}.png")
    (folder / "n09999999").mkdir()  # a class the run does not have: skipped
    Image.fromarray(images[0].numpy().transpose(1, 2, 0)).save(folder / "n09999999" / "x.png")
    (folder / WNIDS[0] / "README.txt").write_text("not an image")

    _, _, model = load_trained(run)
    with torch.no_grad():
        logits = model(gpu_augment(images, train=False)).numpy()
    expected = float((logits.argmax(1) == labels).mean())
    subset = [1, 4, 6]
    keep = np.isin(labels, subset)
    sub_pred = np.asarray(subset)[logits[keep][:, subset].argmax(1)]
    expected_subset = float((sub_pred == labels[keep]).mean())
    assert 0 < expected < 1 and expected_subset != expected

    res = CliRunner().invoke(app, ["eval", str(run), "--dataset", f"imagefolder:{folder}", "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    assert m["dataset"] == "imagefolder:val" and m["eval_samples"] == len(labels)
    assert m["top1"] == pytest.approx(expected, abs=1e-12)
    assert m["skipped"] == {"folders of classes the run does not have": 1, "files that are not images": 1}
    vocab = tmp_path / "subset.csv"
    vocab.write_text("wnid,name\n" + "".join(f"{WNIDS[i]},{NAMES[i]}\n" for i in subset))
    res = CliRunner().invoke(app, ["eval", str(run), "--dataset", f"imagefolder:{folder}", "--classes", str(vocab), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    assert m["num_classes"] == 3 and m["eval_samples"] == int(keep.sum())
    assert m["top1"] == pytest.approx(expected_subset, abs=1e-12)
    # every score is kept, keyed by dataset; the held-out one is the top level and the report's
    CliRunner().invoke(app, ["eval", str(run)])
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved["datasets"]) == {"heldout", "imagefolder:val", "imagefolder:val[subset.csv]"}
    assert saved["top1"] == pytest.approx(expected, abs=1e-12)  # the same images as the held-out split
    assert "imagefolder:val" in (run / "report.md").read_text()
    rows = compare_runs([run])
    assert [r["dataset"] for r in rows] == ["heldout", "imagefolder:val", "imagefolder:val[subset.csv]"]
    # nothing to score is one clear line
    res = CliRunner().invoke(app, ["eval", str(run), "--dataset", f"imagefolder:{tmp_path / 'none'}"])
    assert res.exit_code != 0
