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
from curate.evaluate import evaluate_run
from curate.models import EOT_TOKEN, create_clip, fit_tokens
from curate.objectives import OBJECTIVES, class_weights, subsample_mask
from curate.runs import TrainConfig, load_trained
from curate.train import lr_at, train

NAMES = ["goldfish", "tabby cat", "school bus", "daisy", "lighthouse", "pizza", "violin", "zebra"]
WNIDS = ["n01443537", "n02123045", "n04146614", "n11939491", "n03637318", "n07873807", "n04536866", "n02391049"]
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
        "wnids": WNIDS,
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
    ones = torch.ones(20)
    masks = [subsample_mask(labels, ones, 6, g) for _ in range(5)]
    for m in masks:
        assert m.sum() == 6 and m[3] and m[7]
    assert len({tuple(m.nonzero().squeeze(1).tolist()) for m in masks}) > 1  # the others vary
    assert subsample_mask(torch.arange(10), ones, 4, g).sum() == 10  # never drops a batch class
    # a class never seen in training (weight 0) is never drawn, even when the size asks for it
    w = class_weights(np.array([5, 0, 3, 0]), "linear")
    assert subsample_mask(torch.tensor([0]), w, 4, g).tolist() == [True, False, True, False]


@pytest.mark.parametrize("how", ["uniform", "linear", "sqrt"])
def test_subsample_weights_draw_classes_in_proportion(how: str) -> None:
    counts = np.array([1000, 400, 100, 25, 9, 4, 1, 0])
    w = class_weights(counts, how).numpy().astype(np.float64)
    expected_w = {"uniform": np.ones(8), "linear": counts.astype(float), "sqrt": np.sqrt(counts)}[how]
    assert np.allclose(w, expected_w)
    # the batch holds class 0; one other class per draw: P(c) = w_c / sum of the others' weights
    g = torch.Generator().manual_seed(1234)
    labels = torch.tensor([0])
    draws = 6000
    hits = np.zeros(8)
    for _ in range(draws):
        m = subsample_mask(labels, torch.as_tensor(w, dtype=torch.float32), 2, g).numpy()
        assert m[0] and m.sum() == 2
        hits += m
    hits[0] = 0
    p = expected_w.copy()
    p[0] = 0
    p /= p.sum()
    freq = hits / draws
    # binomial standard error per class; 4.5 sigma is far beyond chance, far below a wrong weighting
    se = np.sqrt(p * (1 - p) / draws) + 1e-12
    assert np.all(np.abs(freq - p) <= 4.5 * se + 1e-9), (how, freq.round(4), p.round(4))


def test_run_json_of_earlier_versions_still_loads() -> None:
    cfg = TrainConfig.from_dict({"objective": "sl-frozen-text", "templates": "openai", "text_from": "runs/x", "gone": 1})
    assert (cfg.prompts, cfg.head) == ("openai80", "runs/x")
    assert cfg.validate().prompts == "openai80"


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
        evaluate_run(tmp_path / objective)
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
        assert m["datasets"]["heldout"]["top1"] == m["top1"]
        assert m["nc_within_between"] > 0 and len(m["nc_cos_means_per_class"]) == len(NAMES)
    clip_metrics = json.loads((tmp_path / "clip" / "metrics.json").read_text())
    assert clip_metrics["scoring"].startswith("zero-shot")

    # curate compare on the two real runs
    out = CliRunner().invoke(app, ["compare", "--tsv", str(tmp_path / "clip"), str(tmp_path / "sl")])
    assert out.exit_code == 0, out.output
    rows = [line.split("\t") for line in out.output.splitlines()]
    assert [r[:2] for r in rows] == [["run", "dataset"], ["clip", "heldout"], ["sl", "heldout"]]
    top1 = rows[0].index("top1")
    assert float(rows[1][top1]) == pytest.approx(clip_metrics["top1"])


@pytest.mark.slow  # two short trainings and their evaluations
def test_subsample_and_frozen_text_objectives_train(manifest: Path, tmp_path: Path) -> None:
    for objective in ("sl-subsample", "sl-frozen-text-subsample"):
        cfg = TrainConfig(objective=objective, epochs=2, batch_size=64, lr=2e-3, subsample_classes=3,
                          subsample_weights="sqrt")
        train(manifest, cfg, out=tmp_path / objective)
        m = evaluate_run(tmp_path / objective)
        assert m["top1"] > 2 / len(NAMES), (objective, m["top1"])
    _, _, frozen = load_trained(tmp_path / "sl-frozen-text-subsample", device=torch.device("cpu"))
    assert not any("class_embeddings" in n for n, _ in frozen.named_parameters())  # a buffer: frozen


def test_resume_ends_with_the_same_weights(manifest: Path, tmp_path: Path) -> None:
    base = TrainConfig(objective="sl-subsample", steps=9, batch_size=96, schedule="constant", warmup=0,
                       subsample_classes=3, log_every=2)
    straight = train(manifest, base, out=tmp_path / "straight")
    # 7 batches of 96 per epoch: stop mid-epoch (step 3), then at an epoch end (step 7), then finish
    train(manifest, TrainConfig(**{**base.to_dict(), "steps": 3}), out=tmp_path / "resumed")
    train(manifest, TrainConfig(**{**base.to_dict(), "steps": 7}), out=tmp_path / "resumed", resume=True)
    resumed = train(manifest, base, out=tmp_path / "resumed", resume=True)
    assert resumed.steps == straight.steps == 9 and resumed.epochs_done == 1
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps_logged = [json.loads(x)["step"] for x in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    # every second step, plus the last step of each invocation; nothing logged twice
    assert steps_logged == [2, 3, 4, 6, 7, 8, 9]


def test_frozen_head_comes_from_a_clip_run(manifest: Path, tmp_path: Path) -> None:
    from curate.models import text_classifier

    train(manifest, TrainConfig(objective="clip", steps=2, batch_size=32), out=tmp_path / "clip")
    cfg = TrainConfig(objective="sl-frozen-text", steps=1, batch_size=32, head=str(tmp_path / "clip"))
    train(manifest, cfg, out=tmp_path / "frozen")
    state = torch.load(tmp_path / "frozen" / "checkpoint.pt", weights_only=True)["model"]
    _, _, clip = load_trained(tmp_path / "clip")
    assert torch.allclose(state["class_embeddings"], text_classifier(clip, NAMES), atol=1e-6)
    # an SL run has no text tower
    bad = TrainConfig(objective="sl-frozen-text", steps=1, batch_size=32, head=str(tmp_path / "frozen"))
    with pytest.raises(CurateError, match="no text tower"):
        train(manifest, bad, out=tmp_path / "bad")


def test_bf16_autocast_runs_every_objective_on_cpu(manifest: Path, tmp_path: Path) -> None:
    for objective in ("clip", "sl-frozen-text-subsample"):
        cfg = TrainConfig(objective=objective, steps=2, batch_size=32, precision="bf16", log_every=1)
        r = train(manifest, cfg, out=tmp_path / objective)
        assert r.steps == 2 and np.isfinite(r.final_loss)
        assert json.loads((r.run_dir / "train_summary.json").read_text())["precision"] == "bf16"


def test_unlabelled_rows_train_clip_and_are_skipped_by_supervised_objectives(tmp_path: Path) -> None:
    """Rows naming no class (curate build --keep-unmatched, label -1): image-text pairs for clip;
    a supervised objective has no target for them, leaves them out and counts them; scoring ignores them."""
    rng = np.random.default_rng(3)
    root = tmp_path / "open"
    counts = [12, 10, 8, 6, 5, 4, 3, 2]
    n_unlabelled = 10
    train_labels = rng.permutation(np.concatenate([np.repeat(np.arange(len(NAMES)), counts), np.full(n_unlabelled, -1)]))
    eval_labels = np.concatenate([np.repeat(np.arange(len(NAMES)), 2), [-1, -1, -1]])
    for split, labels in (("train", train_labels), ("eval", eval_labels)):
        folder = root / "shards" / split
        _write_split(folder, np.maximum(labels, 0), split=split, seed=4)
        np.save(folder / "00000.labels.npy", labels.astype(np.int64), allow_pickle=False)  # same dtype and shape
    n, labelled = len(train_labels), len(train_labels) - n_unlabelled

    # clip: one step over a batch of every row, the unlabelled ones with the others
    clip = train(root, TrainConfig(objective="clip", steps=1, batch_size=n, warmup=0), out=tmp_path / "clip")
    assert clip.images_seen == n and np.isfinite(clip.final_loss)
    run = json.loads((tmp_path / "clip" / "run.json").read_text())
    assert (run["train_samples"], run["unlabelled_samples"], run["unlabelled_skipped"]) == (n, n_unlabelled, 0)
    assert run["train_counts"] == counts  # not a class: the frequencies count the labelled rows

    # sl: an epoch is the labelled rows (a -1 target would make cross-entropy fail), the rest counted
    sl = train(root, TrainConfig(objective="sl", epochs=1, batch_size=labelled, warmup=0), out=tmp_path / "sl")
    assert sl.steps == 1 and sl.images_seen == labelled
    run = json.loads((tmp_path / "sl" / "run.json").read_text())
    assert (run["train_samples"], run["unlabelled_samples"], run["unlabelled_skipped"]) == (labelled, n_unlabelled, n_unlabelled)
    assert json.loads((tmp_path / "sl" / "train_summary.json").read_text())["unlabelled_skipped"] == n_unlabelled

    # per-class scoring: the eval split's unlabelled rows are left out and counted
    m = evaluate_run(tmp_path / "sl")
    assert m["eval_samples"] == 2 * len(NAMES) and m["skipped"] == {"unlabelled": 3}
    assert m["eval_counts"] == [2] * len(NAMES)


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
        (["--head", "runs/x"], "--head does not apply to --objective clip"),
        (["--objective", "sl", "--head", "runs/x"], "--head applies to the frozen-text objectives only"),
        (["--objective", "sl", "--text-tower", "frozen", "--pretrained", "x.pt"], "--text-tower applies to --objective clip only"),
        (["--text-tower", "init"], "need --pretrained"),
        (["--objective", "sl", "--subsample-weights", "sqrt"], "--subsample-weights does not apply"),
        (["--objective", "sl-subsample", "--subsample-weights", "cube"], "--subsample-weights 'cube' is not valid"),
        (["--objective", "sl", "--classifier", "mlp"], "--classifier 'mlp' is not valid"),
        (["--classifier", "cosine"], "--classifier does not apply to --objective clip"),
        (["--optimizer", "lion"], "--optimizer 'lion' is not valid"),
        (["--prompts", "poems"], "--prompts 'poems' is not valid"),
        (["--preset", "best"], "--preset 'best' is not known"),
        (["--pretrained", "no/such.pt", "--text-tower", "init"], "no such file or run folder"),
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
        (["train", str(tmp_path / "no-such-manifest"), "--steps", "1"], "no such manifest folder"),
        (["train", str(tmp_path), "--steps", "1"], "no tensor shards"),  # a folder, but no shards in it
        (["train", str(manifest), "--resume", "--out", str(tmp_path / "never-ran")], "not a training run"),
    ]
    done = tmp_path / "done"
    train(manifest, TrainConfig(objective="sl", steps=1, batch_size=32), out=done)
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
    assert [row.split("\t")[:3] for row in table[1:]] == [["clip", "heldout", "clip"], ["sl", "heldout", "sl"]]


# --------------------------------------------------------------------------- objectives, towers, heads


def _eval_images() -> torch.Tensor:
    from curate.demo import class_styles, render_images
    from curate.loader import gpu_augment

    labels = np.arange(len(NAMES))
    images = render_images(labels, class_styles(len(NAMES), seed=0), seed=9, size=32)
    return gpu_augment(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), train=False)


def _logits(objective: str, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    obj = OBJECTIVES[objective]
    with torch.no_grad():
        head = obj.head(model, NAMES, prompts="simple", device=torch.device("cpu"), autocast_dtype=None)
        return head.logits(obj.features(model, images))


@pytest.mark.parametrize(
    ("objective", "extra"),
    [("clip", {}), ("sl", {"classifier": "cosine"}), ("sl", {}), ("sl-subsample", {}),
     ("sl-frozen-text", {}), ("sl-frozen-text-subsample", {})],
)
def test_checkpoint_round_trip_reproduces_the_logits(tmp_path: Path, objective: str, extra: dict) -> None:
    """A model saved the way `curate train` saves it loads back (frozen heads included) and gives
    bit-identical logits."""
    from curate.objectives import Setup
    from curate.runs import save_checkpoint, write_run

    cfg = TrainConfig(objective=objective, steps=1, **extra).validate()
    setup = Setup(class_names=NAMES, wnids=WNIDS, train_counts=np.array(TRAIN_COUNTS), for_training=True)
    model = OBJECTIVES[objective].build(cfg, setup)
    with torch.no_grad():  # move every weight off its initial value, as training would
        g = torch.Generator().manual_seed(3)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    model.eval()
    images = _eval_images()
    before = _logits(objective, model, images)
    write_run(tmp_path, {"config": cfg.to_dict(), "manifest": "x", "num_classes": len(NAMES), "class_names": NAMES,
                         "wnids": WNIDS, "image_size": 32})
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": model.state_dict()})
    _, loaded_cfg, loaded = load_trained(tmp_path)
    assert loaded_cfg == cfg
    after = _logits(objective, loaded, images)
    assert torch.equal(before, after)
    assert before.shape == (len(NAMES), len(NAMES)) and before.std() > 0


@pytest.fixture(scope="module")
def pretrained_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An open_clip checkpoint file, as open_clip_train writes it ({"state_dict": ...}, DDP prefix)."""
    clip = create_clip("tiny", seed=77)
    path = tmp_path_factory.mktemp("pretrained") / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, path)
    return path


def test_text_tower_frozen_stays_identical_and_init_moves(manifest: Path, tmp_path: Path, pretrained_file: Path) -> None:
    from curate.models import is_text_key

    source = {k.removeprefix("module."): v for k, v in torch.load(pretrained_file, weights_only=True)["state_dict"].items()}
    states = {}
    for tower in ("frozen", "init"):
        cfg = TrainConfig(objective="clip", steps=3, batch_size=32, lr=1e-3, warmup=0, pretrained=str(pretrained_file),
                          text_tower=tower)
        train(manifest, cfg, out=tmp_path / tower)
        states[tower] = torch.load(tmp_path / tower / "checkpoint.pt", weights_only=True)["model"]
        assert json.loads((tmp_path / tower / "run.json").read_text())["config"]["text_tower"] == tower
    text_keys = [k for k in source if is_text_key(k) and k != "logit_scale"]
    assert len(text_keys) > 10
    frozen, init = states["frozen"], states["init"]
    assert all(torch.equal(frozen[k], source[k]) for k in text_keys)  # byte-identical after 3 steps
    assert not all(torch.equal(init[k], source[k]) for k in text_keys)  # trained
    # the image tower trained from scratch in both (not the pretrained one)
    assert not torch.equal(frozen["visual.conv1.weight"], source["visual.conv1.weight"])
    meta = json.loads((tmp_path / "frozen" / "run.json").read_text())
    assert meta["trainable_parameters"] < meta["parameters"]


def test_pretrained_image_tower_and_bad_checkpoints(manifest: Path, tmp_path: Path, pretrained_file: Path) -> None:
    from curate.objectives import Setup

    cfg = TrainConfig(objective="sl", steps=1, pretrained=str(pretrained_file), image_tower="init").validate()
    from curate.pretrained import read_state

    setup = Setup(class_names=NAMES, pretrained=read_state(pretrained_file, model="tiny"), pretrained_source="p",
                  for_training=True)
    model = OBJECTIVES["sl"].build(cfg, setup)
    source = create_clip("tiny", seed=77)
    assert torch.equal(model.visual.conv1.weight, source.visual.conv1.weight)
    # a checkpoint of another architecture names the weight that does not fit
    other = tmp_path / "other.pt"
    state = source.state_dict()
    state["visual.conv1.weight"] = torch.zeros(3, 3)
    torch.save(state, other)
    with pytest.raises(CurateError, match="visual.conv1.weight"):
        train(manifest, TrainConfig(objective="sl", steps=1, pretrained=str(other), image_tower="init"), out=tmp_path / "x")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CurateError, match="not a PyTorch checkpoint"):
        train(manifest, TrainConfig(objective="clip", steps=1, pretrained=str(junk), text_tower="init"), out=tmp_path / "y")


def test_cosine_classifier_temperature_stays_capped(manifest: Path, tmp_path: Path) -> None:
    import math

    from curate.models import clamp_logit_scale

    # SGD at a huge rate pushes the temperature far; the clamp after each step holds it at <= 100
    cfg = TrainConfig(objective="sl", classifier="cosine", optimizer="sgd", lr=50.0, weight_decay=0.0, warmup=0,
                      schedule="constant", steps=4, batch_size=64, log_every=1)
    train(manifest, cfg, out=tmp_path / "cos")
    state = torch.load(tmp_path / "cos" / "checkpoint.pt", weights_only=True)["model"]
    assert "prototypes" in state and "head.weight" not in state
    assert 0.0 <= float(state["logit_scale"]) <= math.log(100) + 1e-6
    _, _, model = load_trained(tmp_path / "cos")
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    clamp_logit_scale(model)
    assert float(model.logit_scale.detach().exp()) == pytest.approx(100.0)


def test_paper_preset_fills_what_was_not_given(manifest: Path, tmp_path: Path) -> None:
    run = tmp_path / "paper"
    res = CliRunner().invoke(app, ["train", str(manifest), "--preset", "paper-sl", "--batch-size", "64", "--steps", "2",
                                   "--out", str(run), "--no-eval"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((run / "run.json").read_text())["config"]
    assert (cfg["objective"], cfg["optimizer"], cfg["classifier"], cfg["momentum"]) == ("sl", "sgd", "cosine", 0.9)
    assert cfg["weight_decay"] == 1e-4 and cfg["warmup"] == 0 and cfg["steps"] == 2 and cfg["preset"] == "paper-sl"
    assert cfg["lr"] == pytest.approx(0.1 * 64 / 256)  # the study's linear scaling rule
    # the frozen-head objective takes the preset too (its head is cosine already)
    res = CliRunner().invoke(app, ["train", str(manifest), "--preset", "paper-sl", "--objective", "sl-frozen-text-subsample",
                                   "--batch-size", "32", "--steps", "1", "--out", str(tmp_path / "p2"), "--no-eval"])
    assert res.exit_code == 0, res.output


def test_text_head_command_and_head_file(manifest: Path, tmp_path: Path, pretrained_file: Path) -> None:
    from curate.models import load_towers, text_classifier

    # a vocabulary in another order than the run's classes, with one extra class: rows match by wnid
    order = [3, 0, 7, 5, 1, 2, 6, 4]
    vocab = tmp_path / "vocab.csv"
    vocab.write_text("wnid,name\n" + "".join(f"{WNIDS[i]},{NAMES[i]}\n" for i in order) + "n09999999,unicorn\n")
    head_file = tmp_path / "head.pt"
    res = CliRunner().invoke(app, ["text-head", str(pretrained_file), "--vocab", str(vocab), "--model", "tiny",
                                   "--prompts", "a+cname", "--out", str(head_file)])
    assert res.exit_code == 0, res.output
    head = torch.load(head_file, weights_only=True)
    assert head["embeddings"].shape == (9, 128) and head["prompts"] == "a+cname"
    cfg = TrainConfig(objective="sl-frozen-text", steps=1, batch_size=32, head=str(head_file))
    train(manifest, cfg, out=tmp_path / "frozen")
    state = torch.load(tmp_path / "frozen" / "checkpoint.pt", weights_only=True)["model"]
    clip = create_clip("tiny")
    source = torch.load(pretrained_file, weights_only=True)["state_dict"]
    load_towers(clip, {k.removeprefix("module."): v for k, v in source.items()}, image=False, text=True, source="t")
    expected = text_classifier(clip, NAMES, prompts="a+cname")  # in the run's class order
    assert torch.allclose(state["class_embeddings"], expected, atol=1e-5)
    assert not torch.allclose(expected, text_classifier(clip, NAMES, prompts="photo"), atol=1e-3)


def test_train_help_groups_options_by_objective() -> None:
    from curate.cli.train import OBJECTIVE_HELP

    res = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for panel in ("Supervised classifier (sl, sl-subsample)", "Subsampled softmax", "Frozen text head", "CLIP (clip)",
                  "Optimisation", "Model and pretrained towers"):
        assert panel in res.output, panel
    for name in OBJECTIVES:  # the hand-written help names every registered objective
        assert f"{name}:" in OBJECTIVE_HELP, name
    assert "(default: 50" in res.output  # rich markup must not eat the defaults
    assert "\\[" not in res.output  # nor an escape for it show
    # the plain help a user gets by default (TYPER_USE_RICH unset), in a process of its own
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TYPER_USE_RICH"}
    plain = subprocess.run([sys.executable, "-m", "curate", "train", "--help"], capture_output=True, text=True, env=env, check=True).stdout
    assert "(default: 50" in plain and "\\[" not in plain
