"""The bundled trainer on tensor shards the tests write: it learns, it reports, it resumes.

The shard sets are made here from the demo's image renderer (class-dependent colours, stripes
and shapes), captions "a photo of a {name}" tokenised as `curate shards` does, and an
imbalanced class distribution, in the on-disk format `curate.loader` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from curate.cli import app, main
from curate.errors import CurateError
from curate.models import EOT_TOKEN, create_clip, fit_tokens
from curate.train import TrainConfig, load_trained, lr_at, subsample_mask, train

NAMES = ["goldfish", "tabby cat", "school bus", "daisy", "lighthouse", "pizza", "violin", "zebra"]
# imbalance 10 over the eight classes, most frequent first
TRAIN_COUNTS = [200, 144, 104, 75, 54, 39, 28, 20]
EVAL_PER_CLASS = 20


def _write_split(folder: Path, labels: np.ndarray, *, split: str, seed: int, resolution: int = 32) -> None:
    from curate.demo import class_styles, render_images
    from curate.shards import tokenize

    folder.mkdir(parents=True)
    images = render_images(labels, class_styles(len(NAMES), seed=0), seed=seed, size=resolution)
    arrays = {
        "images": np.ascontiguousarray(images.transpose(0, 3, 1, 2)),
        "tokens": tokenize([f"a photo of a {NAMES[i]}" for i in labels]),
        "labels": labels.astype(np.int64),
        "uids": np.array([f"{split}-{i:05d}" for i in range(len(labels))]),
    }
    files = {}
    for kind, arr in arrays.items():
        np.save(folder / f"00000.{kind}.npy", arr, allow_pickle=False)
        files[kind] = {"file": f"00000.{kind}.npy", "dtype": arr.dtype.str, "shape": list(arr.shape)}
    index = {
        "format": "curate-tensor-shards",
        "version": 1,
        "split": split,
        "resolution": resolution,
        "layout": "NCHW",
        "num_samples": len(labels),
        "num_classes": len(NAMES),
        "class_names": NAMES,
        "shards": [{"name": "00000", "num_samples": len(labels), "files": files}],
    }
    (folder / "index.json").write_text(json.dumps(index))


def make_manifest(root: Path) -> Path:
    """A manifest folder holding only tensor shards: imbalanced train, balanced eval."""
    rng = np.random.default_rng(0)
    train_labels = rng.permutation(np.repeat(np.arange(len(NAMES)), TRAIN_COUNTS))
    eval_labels = np.repeat(np.arange(len(NAMES)), EVAL_PER_CLASS)
    _write_split(root / "shards" / "train", train_labels, split="train", seed=1)
    _write_split(root / "shards" / "eval", eval_labels, split="eval", seed=2)
    return root


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("shardset") / "toy")


# --------------------------------------------------------------------------- pieces


def test_fit_tokens_keeps_an_end_token() -> None:
    import open_clip

    tokens = open_clip.tokenize(["a photo of a dog", " ".join(["word"] * 60)])
    cut = fit_tokens(tokens, 16)
    assert cut.shape == (2, 16)
    assert cut[0].tolist() == tokens[0, :16].tolist()  # short text: untouched
    assert cut[1, -1] == EOT_TOKEN and cut[1].argmax() == 15  # long text: pooled at its end


def test_subsample_mask_holds_the_batch_and_random_others() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 3, 7])
    masks = [subsample_mask(labels, 20, 6, g) for _ in range(5)]
    for m in masks:
        assert m.sum() == 6 and m[3] and m[7]
    assert len({tuple(m.nonzero().squeeze(1).tolist()) for m in masks}) > 1  # the others vary
    assert subsample_mask(torch.arange(10), 20, 4, g).sum() == 10  # never drops a batch class


def test_lr_schedule() -> None:
    assert lr_at(0, base=1.0, total=100, warmup=10, schedule="cosine") == pytest.approx(0.1)
    assert lr_at(9, base=1.0, total=100, warmup=10, schedule="cosine") == pytest.approx(1.0)
    assert lr_at(10, base=1.0, total=100, warmup=10, schedule="cosine") == pytest.approx(1.0)
    assert lr_at(55, base=1.0, total=100, warmup=10, schedule="cosine") == pytest.approx(0.5)
    assert lr_at(99, base=1.0, total=100, warmup=10, schedule="constant") == 1.0


def test_tiny_model_is_built_from_scratch_and_seeded() -> None:
    a, b, c = create_clip("tiny", seed=1), create_clip("tiny", seed=1), create_clip("tiny", seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.visual.conv1.weight, c.visual.conv1.weight)
    img, txt, _ = a(torch.zeros(2, 3, 32, 32), fit_tokens(torch.zeros(2, 77, dtype=torch.long), 32))
    assert img.shape == txt.shape == (2, 128)


# --------------------------------------------------------------------------- training


@pytest.mark.slow  # ~15 s on two idle cores; much longer when they are shared
def test_clip_and_sl_learn_and_report_every_metric(manifest: Path, tmp_path: Path) -> None:
    chance = 1 / len(NAMES)
    results = {}
    for objective in ("clip", "sl"):
        # small contrastive batches: with one caption per class, fewer same-class "negatives"
        cfg = TrainConfig(objective=objective, epochs=4, batch_size=32 if objective == "clip" else 64, lr=2e-3, seed=0)
        results[objective] = train(manifest, cfg, out=tmp_path / objective)
    for objective, r in results.items():
        m = json.loads((r.run_dir / "metrics.json").read_text())
        assert m["top1"] >= 3 * chance, (objective, m["top1"])
        assert m["top5"] >= m["top1"]
        for key in (
            "top1", "top5", "mean_per_class_accuracy", "pearson_log_freq", "spearman_log_freq",
            "head_accuracy", "medium_accuracy", "tail_accuracy", "prediction_entropy", "prediction_entropy_norm",
        ):
            assert isinstance(m[key], float), (objective, key, m[key])
        assert len(m["per_class_accuracy"]) == len(NAMES)
        assert m["train_counts"] == TRAIN_COUNTS
        assert m["eval_counts"] == [EVAL_PER_CLASS] * len(NAMES)
        assert m["training"]["images_per_s"] > 0
        report = (r.run_dir / "report.md").read_text()
        assert "Pearson" in report and "Spearman" in report and "head third" in report
        for png in ("per_class_accuracy.png", "predictions.png"):
            assert (r.run_dir / png).stat().st_size > 1000
        log = [json.loads(line) for line in (r.run_dir / "train_log.jsonl").read_text().splitlines()]
        assert log[-1]["step"] == r.steps and all(row["loss"] > 0 for row in log)
    assert results["clip"].metrics["scoring"].startswith("zero-shot")

    # curate compare on the two real runs
    out = CliRunner().invoke(app, ["compare", "--tsv", str(tmp_path / "clip"), str(tmp_path / "sl")])
    assert out.exit_code == 0, out.output
    rows = [line.split("\t") for line in out.output.splitlines()]
    assert [r[0] for r in rows] == ["run", "clip", "sl"]
    top1 = rows[0].index("top1")
    assert float(rows[1][top1]) == pytest.approx(results["clip"].metrics["top1"])


def test_subsample_and_frozen_text_objectives_train(manifest: Path, tmp_path: Path) -> None:
    for objective in ("sl-subsample", "sl-frozen-text"):
        cfg = TrainConfig(objective=objective, epochs=2, batch_size=64, lr=2e-3, subsample_classes=3)
        r = train(manifest, cfg, out=tmp_path / objective)
        assert r.metrics["top1"] > 2 / len(NAMES), (objective, r.metrics["top1"])
    _, _, frozen = load_trained(tmp_path / "sl-frozen-text", device=torch.device("cpu"))
    assert not any("class_embeddings" in n for n, _ in frozen.named_parameters())  # a buffer: frozen


def test_resume_ends_with_the_same_weights(manifest: Path, tmp_path: Path) -> None:
    base = TrainConfig(objective="sl-subsample", steps=9, batch_size=96, schedule="constant", warmup=0,
                       subsample_classes=3, log_every=2)
    straight = train(manifest, base, out=tmp_path / "straight", evaluate=False)
    # 7 batches of 96 per epoch: stop mid-epoch (step 3), then at an epoch end (step 7), then finish
    train(manifest, TrainConfig(**{**base.to_dict(), "steps": 3}), out=tmp_path / "resumed", evaluate=False)
    train(manifest, TrainConfig(**{**base.to_dict(), "steps": 7}), out=tmp_path / "resumed", resume=True, evaluate=False)
    resumed = train(manifest, base, out=tmp_path / "resumed", resume=True, evaluate=False)
    assert resumed.steps == straight.steps == 9 and resumed.epochs_done == 1
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps_logged = [json.loads(x)["step"] for x in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    # every second step, plus the last step of each invocation; nothing logged twice
    assert steps_logged == [2, 3, 4, 6, 7, 8, 9]


def test_frozen_text_classifier_comes_from_a_clip_run(manifest: Path, tmp_path: Path) -> None:
    from curate.models import text_classifier
    from curate.train import load_clip_from_run

    train(manifest, TrainConfig(objective="clip", steps=3, batch_size=32), out=tmp_path / "clip", evaluate=False)
    cfg = TrainConfig(objective="sl-frozen-text", steps=1, batch_size=32, text_from=str(tmp_path / "clip"))
    train(manifest, cfg, out=tmp_path / "frozen", evaluate=False)
    state = torch.load(tmp_path / "frozen" / "checkpoint.pt", weights_only=True)["model"]
    expected = text_classifier(load_clip_from_run(tmp_path / "clip", device=torch.device("cpu")), NAMES)
    assert torch.allclose(state["class_embeddings"], expected, atol=1e-6)
    # an SL run is not a text source
    bad = TrainConfig(objective="sl-frozen-text", steps=1, batch_size=32, text_from=str(tmp_path / "frozen"))
    with pytest.raises(CurateError, match="not clip"):
        train(manifest, bad, out=tmp_path / "bad", evaluate=False)


def test_bf16_autocast_runs_every_objective_on_cpu(manifest: Path, tmp_path: Path) -> None:
    for objective in ("clip", "sl-frozen-text"):
        cfg = TrainConfig(objective=objective, steps=2, batch_size=32, precision="bf16", log_every=1)
        r = train(manifest, cfg, out=tmp_path / objective, evaluate=False)
        assert r.steps == 2 and np.isfinite(r.final_loss)
        assert json.loads((r.run_dir / "train_summary.json").read_text())["precision"] == "bf16"


# --------------------------------------------------------------------------- the CLI


def test_cli_train_eval_compare(manifest: Path, tmp_path: Path) -> None:
    run = tmp_path / "cli-run"
    res = CliRunner().invoke(
        app, ["train", str(manifest), "--objective", "sl", "--steps", "6", "--batch-size", "64", "--out", str(run), "--no-eval"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads((run / "run.json").read_text())["config"]["steps"] == 6
    assert not (run / "metrics.json").exists()
    res = CliRunner().invoke(app, ["eval", str(run), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    assert metrics["eval_samples"] == EVAL_PER_CLASS * len(NAMES)
    assert json.loads((run / "metrics.json").read_text())["top1"] == metrics["top1"]
    # a bare --resume finishes the saved length: nothing more to do, same weights
    before = (run / "checkpoint.pt").read_bytes()
    res = CliRunner().invoke(app, ["train", str(manifest), "--resume", "--out", str(run), "--no-eval"])
    assert res.exit_code == 0, res.output
    assert torch.equal(
        torch.load(run / "checkpoint.pt", weights_only=True)["model"]["head.weight"],
        torch.load(__import__("io").BytesIO(before), weights_only=True)["model"]["head.weight"],
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--objective", "dino"], "--objective 'dino' is not valid"),
        (["--model", "ViT-H-99"], "--model 'ViT-H-99' is not valid"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--checkpoint-epochs", "0"], "--checkpoint-epochs must be at least 1"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
        (["--text-from", "runs/x"], "--text-from only applies"),
    ],
)
def test_cli_rejects_bad_options(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", str(manifest), "--out", str(tmp_path / "r"), "--steps", "1", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("error:"), err


def test_cli_errors_name_the_folder(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["train", str(tmp_path / "no-such-manifest"), "--steps", "1"], "no tensor shards"),
        (["train", str(manifest), "--resume", "--out", str(tmp_path / "never-ran")], "not a training run"),
    ]
    done = tmp_path / "done"
    train(manifest, TrainConfig(objective="sl", steps=1, batch_size=32), out=done, evaluate=False)
    cases.append((["train", str(manifest), "--steps", "1", "--out", str(done)], "already holds a run"))
    (done / "checkpoint.pt").write_bytes(b"not a checkpoint")
    cases.append((["eval", str(done)], "cannot read the checkpoint"))
    for argv, needle in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
        err = capsys.readouterr().err
        assert needle in err, (argv, err)


# --------------------------------------------------------------------------- end to end


def _curate(*args: str, cwd: Path) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "CURATE_NO_PROGRESS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, "-m", "curate", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (args, proc.stderr[-3000:])
    return proc.stdout


@pytest.mark.slow  # the real chain: demo build, img2dataset + tensor shards, two trainings (~1-2 min)
def test_demo_build_shards_train_eval_compare(tmp_path: Path) -> None:
    _curate("build", "--imbalance", "10", "--captions", "template", "--classes", "10", "--max-per-class", "80",
            "--eval-per-class", "8", "--allow-shortfall", "--name", "e2e", "--out-root", "manifests", cwd=tmp_path)
    _curate("shards", "manifests/e2e", "--resolution", "32", "--processes", "1", "--workers", "1", cwd=tmp_path)
    _curate("train", "manifests/e2e", "--epochs", "5", "--batch-size", "32", "--lr", "2e-3", "--out", "runs/clip", cwd=tmp_path)
    _curate("train", "manifests/e2e", "--objective", "sl", "--epochs", "5", "--batch-size", "32", "--lr", "2e-3",
            "--out", "runs/sl", "--no-eval", cwd=tmp_path)
    _curate("eval", "runs/sl", cwd=tmp_path)
    m = json.loads((tmp_path / "runs/clip/metrics.json").read_text())
    # every eval row of the build is scored (8 per class where the matched pool has them)
    assert m["num_classes"] == 10 and m["eval_samples"] == pl.read_parquet(tmp_path / "manifests/e2e/eval.parquet").height
    assert m["top1"] >= 2 * m["chance_top1"], m["top1"]  # zero-shot, from scratch
    # the training distribution the report reads is the build's
    classes = [line.split("\t") for line in (tmp_path / "manifests/e2e/classes.tsv").read_text().splitlines()]
    assert sorted(m["train_counts"]) == sorted(int(c[1]) for c in classes if c[1].isdigit())
    table = _curate("compare", "--tsv", "runs/clip", "runs/sl", cwd=tmp_path).splitlines()
    assert [row.split("\t")[:2] for row in table[1:]] == [["clip", "clip"], ["sl", "sl"]]
