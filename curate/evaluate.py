"""The validation report of a training run: accuracy on the balanced eval split, read against
the training distribution.

Owns the metric functions (top-k and per-class accuracy, correlation of per-class accuracy with
log training frequency, head / medium / tail accuracy, entropy of the prediction histogram), the
evaluation of a run folder (``metrics.json``, ``report.md``, ``per_class_accuracy.png``,
``predictions.png``) and the side-by-side comparison of runs (``curate compare``).

CLIP runs are scored zero-shot: each class is the mean text embedding of its name in open_clip's
ImageNet templates. Supervised runs are scored with their own classifier.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from curate.errors import CurateError
from curate.util import atomic_path, write_text_atomic

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
ACC_PLOT = "per_class_accuracy.png"
PRED_PLOT = "predictions.png"
GROUPS = ("head", "medium", "tail")

# --------------------------------------------------------------------------- metric functions


def topk_accuracy(topk: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the first ``k`` columns of ``topk`` (``[N, >=k]``)."""
    topk = np.asarray(topk)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    hit = (topk[:, :k] == labels[:, None]).any(axis=1)
    return float(hit.mean())


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Top-1 accuracy of each class (NaN for a class with no eval samples)."""
    pred = np.asarray(pred)
    labels = np.asarray(labels)
    total = np.bincount(labels, minlength=num_classes).astype(np.float64)
    right = np.bincount(labels[pred == labels], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, right / np.where(total > 0, total, 1), np.nan)


def log_frequency(train_counts: np.ndarray) -> np.ndarray:
    """``log(1 + count)``: defined for classes the training set never showed (count 0)."""
    return np.log1p(np.asarray(train_counts, dtype=np.float64))


def _finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def frequency_correlation(per_class_acc: np.ndarray, train_counts: np.ndarray) -> dict[str, float | None]:
    """Pearson and Spearman correlation of per-class accuracy with log training frequency.

    Classes without eval samples are left out. ``None`` where a correlation is undefined (fewer
    than three classes, or either side constant -- e.g. a balanced training set).
    """
    from scipy import stats

    acc = np.asarray(per_class_acc, dtype=np.float64)
    logf = log_frequency(train_counts)
    keep = np.isfinite(acc)
    acc, logf = acc[keep], logf[keep]
    out: dict[str, float | None] = {"pearson": None, "pearson_p": None, "spearman": None, "spearman_p": None}
    if len(acc) < 3 or np.ptp(acc) == 0 or np.ptp(logf) == 0:
        return out
    p = stats.pearsonr(logf, acc)
    s = stats.spearmanr(logf, acc)
    out["pearson"], out["pearson_p"] = _finite_or_none(p.statistic), _finite_or_none(p.pvalue)
    out["spearman"], out["spearman_p"] = _finite_or_none(s.statistic), _finite_or_none(s.pvalue)
    return out


def frequency_groups(train_counts: np.ndarray) -> dict[str, np.ndarray]:
    """Class indices of the head, medium and tail thirds by training count.

    Classes are ranked by count, most frequent first, ties by class index; ``np.array_split``
    gives the head the extra class when the number does not divide by three.
    """
    counts = np.asarray(train_counts)
    order = np.lexsort((np.arange(len(counts)), -counts))
    return dict(zip(GROUPS, np.array_split(order, 3)))


def group_accuracy(per_class_acc: np.ndarray, train_counts: np.ndarray) -> dict[str, float | None]:
    """Mean per-class accuracy of the head, medium and tail thirds (see ``frequency_groups``)."""
    acc = np.asarray(per_class_acc, dtype=np.float64)
    out: dict[str, float | None] = {}
    for name, idx in frequency_groups(train_counts).items():
        vals = acc[idx]
        vals = vals[np.isfinite(vals)]
        out[name] = float(vals.mean()) if len(vals) else None
    return out


def prediction_counts(pred: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(pred), minlength=num_classes)


def prediction_entropy(counts: np.ndarray) -> dict[str, float | None]:
    """Entropy (nats) of the top-1 prediction histogram, and that entropy over ``log K``.

    A balanced eval set predicted perfectly gives 1.0 (normalised); a model that predicts one
    class for everything gives 0.0. Head-biased models fall in between.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    k = len(counts)
    if total == 0 or k == 0:
        return {"entropy": None, "entropy_norm": None}
    p = counts[counts > 0] / total
    h = float(-(p * np.log(p)).sum())
    return {"entropy": h, "entropy_norm": h / math.log(k) if k > 1 else None}


def compute_metrics(
    topk: np.ndarray,
    labels: np.ndarray,
    train_counts: np.ndarray,
) -> dict:
    """Every metric of the report from top-k predictions (``[N, k]``, best first) and labels."""
    topk = np.asarray(topk)
    labels = np.asarray(labels)
    train_counts = np.asarray(train_counts)
    num_classes = len(train_counts)
    if topk.ndim != 2 or topk.shape[0] != labels.shape[0]:
        raise ValueError("topk must be [N, k] with one row per label")
    pred = topk[:, 0]
    acc = per_class_accuracy(pred, labels, num_classes)
    pc = prediction_counts(pred, num_classes)
    corr = frequency_correlation(acc, train_counts)
    groups = group_accuracy(acc, train_counts)
    ent = prediction_entropy(pc)
    present = train_counts[train_counts > 0]
    pred_corr = frequency_correlation(pc.astype(np.float64), train_counts)
    finite = acc[np.isfinite(acc)]
    return {
        "num_classes": int(num_classes),
        "eval_samples": int(len(labels)),
        "top1": topk_accuracy(topk, labels, 1),
        "top5": topk_accuracy(topk, labels, min(5, topk.shape[1])),
        "mean_per_class_accuracy": float(finite.mean()) if len(finite) else None,
        "pearson_log_freq": corr["pearson"],
        "pearson_p": corr["pearson_p"],
        "spearman_log_freq": corr["spearman"],
        "spearman_p": corr["spearman_p"],
        "head_accuracy": groups["head"],
        "medium_accuracy": groups["medium"],
        "tail_accuracy": groups["tail"],
        "prediction_entropy": ent["entropy"],
        "prediction_entropy_norm": ent["entropy_norm"],
        # do frequent classes also get predicted more often? (Spearman of counts)
        "prediction_spearman_log_freq": pred_corr["spearman"],
        "train_samples": int(train_counts.sum()),
        "train_imbalance": float(present.max() / present.min()) if len(present) else None,
        "per_class_accuracy": [None if not math.isfinite(a) else float(a) for a in acc],
        "prediction_counts": pc.astype(int).tolist(),
        "train_counts": train_counts.astype(int).tolist(),
        "eval_counts": np.bincount(labels, minlength=num_classes).astype(int).tolist(),
    }


# --------------------------------------------------------------------------- evaluating a run


def evaluate_run(
    run_dir: Path,
    *,
    device: str = "auto",
    batch_size: int = 256,
    templates: str | None = None,
) -> dict:
    """Score a run on its manifest's eval split and write the report files into the run folder."""
    import torch

    from curate.loader import gpu_augment, open_shards
    from curate.models import text_classifier
    from curate.train import SUMMARY_FILE, autocast, load_trained, resolve_device

    run_dir = Path(run_dir)
    dev = resolve_device(device)
    meta, cfg, model = load_trained(run_dir, device=dev)
    manifest = Path(meta["manifest"])
    if not manifest.exists():
        raise CurateError(f"{run_dir}: its manifest {manifest} no longer exists")
    if batch_size < 1:
        raise CurateError(f"--batch-size must be at least 1 (got {batch_size})")
    eval_shards = open_shards(manifest, split="eval")
    train_shards = open_shards(manifest, split="train")
    num_classes = int(meta["num_classes"])
    class_names = list(meta["class_names"])
    if int(eval_shards.num_classes) != num_classes:
        raise CurateError(
            f"{manifest}: the eval split has {eval_shards.num_classes} classes, the run trained on {num_classes}"
        )
    if eval_shards.num_samples == 0:
        raise CurateError(f"{manifest}: the eval split is empty; nothing to evaluate")
    train_counts = np.bincount(np.asarray(train_shards.labels, dtype=np.int64), minlength=num_classes)
    templates = templates or cfg.templates
    image_size = int(meta["image_size"])
    precision = cfg.precision if dev.type == "cuda" else "fp32"
    k = min(5, num_classes)

    with torch.no_grad():
        if cfg.objective == "clip":
            classifier = text_classifier(
                model,
                class_names,
                templates=templates,
                device=dev,
                autocast_dtype=torch.bfloat16 if precision == "bf16" else None,
            ).to(dev)
        tops, labels = [], []
        from curate.ui import track

        batches = eval_shards.batches(batch_size, shuffle=False, drop_last=False, device=str(dev))
        total = -(-int(eval_shards.num_samples) // batch_size)
        for batch in track(batches, description=f"eval {run_dir.name}", total=total):
            images = gpu_augment(batch.images, train=False, out_size=image_size)
            with autocast(dev, precision):
                if cfg.objective == "clip":
                    feats = model.encode_image(images, normalize=True).float()
                    logits = feats @ classifier.T
                else:
                    logits = model(images).float()
            tops.append(logits.topk(k, dim=1).indices.cpu())
            labels.append(batch.labels.cpu())
    topk = torch.cat(tops).numpy()
    y = torch.cat(labels).numpy().astype(np.int64)

    metrics = compute_metrics(topk, y, train_counts)
    summary_path = run_dir / SUMMARY_FILE
    training = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    metrics = {
        "run": run_dir.name,
        "manifest": str(manifest),
        "objective": cfg.objective,
        "model": cfg.model,
        "scoring": f"zero-shot ({templates} templates)" if cfg.objective == "clip" else "classifier",
        "chance_top1": 1.0 / num_classes,
        **metrics,
        "class_names": class_names,
        "training": training,
    }
    write_text_atomic(run_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    write_plots(run_dir, metrics)
    write_text_atomic(run_dir / REPORT_FILE, render_report(metrics))
    return metrics


def read_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        if (Path(run_dir) / "run.json").is_file():
            raise CurateError(f"{run_dir}: no {METRICS_FILE} yet; run `curate eval {run_dir}` first")
        raise CurateError(f"{run_dir}: not a training run (no run.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CurateError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


# --------------------------------------------------------------------------- report and plots


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_report(m: dict) -> str:
    """``report.md`` of one run."""
    t = m.get("training", {})
    names = m["class_names"]
    acc = m["per_class_accuracy"]
    counts = m["train_counts"]
    order = sorted(range(len(names)), key=lambda i: (-counts[i], i))
    lines = [
        f"# Validation report: {m['run']}",
        "",
        f"- manifest: `{m['manifest']}`",
        f"- objective: **{m['objective']}**, model **{m['model']}**, scored by {m['scoring']}",
        f"- training: {t.get('steps', 'n/a')} steps, {t.get('images_seen', 'n/a')} images, "
        f"{_fmt(t.get('train_time_s'), 1)} s, {_fmt(t.get('images_per_s'), 0)} images/s on {t.get('device', 'n/a')} "
        f"({t.get('precision', 'n/a')})",
        f"- training set: {m['train_samples']} samples over {m['num_classes']} classes, "
        f"imbalance (max/min count) {_fmt(m['train_imbalance'], 1)}",
        f"- eval set: {m['eval_samples']} samples (balanced split); chance top-1 {_pct(m['chance_top1'])}",
        "",
        "## Accuracy",
        "",
        "| metric | value |",
        "|---|---|",
        f"| top-1 | {_pct(m['top1'])} |",
        f"| top-5 | {_pct(m['top5'])} |",
        f"| mean per-class accuracy | {_pct(m['mean_per_class_accuracy'])} |",
        f"| head third | {_pct(m['head_accuracy'])} |",
        f"| medium third | {_pct(m['medium_accuracy'])} |",
        f"| tail third | {_pct(m['tail_accuracy'])} |",
        "",
        "## Against the training distribution",
        "",
        "| metric | value |",
        "|---|---|",
        f"| Pearson r (per-class accuracy, log(1+train count)) | {_fmt(m['pearson_log_freq'])} (p={_fmt(m['pearson_p'], 3)}) |",
        f"| Spearman ρ (per-class accuracy, log(1+train count)) | {_fmt(m['spearman_log_freq'])} (p={_fmt(m['spearman_p'], 3)}) |",
        f"| prediction histogram entropy (nats) | {_fmt(m['prediction_entropy'])} |",
        f"| ... over log K (1 = every class predicted equally often) | {_fmt(m['prediction_entropy_norm'])} |",
        f"| Spearman ρ (times predicted, log(1+train count)) | {_fmt(m['prediction_spearman_log_freq'])} |",
        "",
        "The study's signature: supervised learning's per-class accuracy tracks training frequency",
        "closely (high correlation, head ≫ tail, a skewed prediction histogram); CLIP's much less so.",
        "",
        f"![per-class accuracy against training frequency]({ACC_PLOT})",
        "",
        f"![predictions per class]({PRED_PLOT})",
        "",
        "## Per class (most frequent first)",
        "",
        "| label | class | train count | eval count | accuracy | times predicted |",
        "|---|---|---|---|---|---|",
    ]
    for i in order:
        lines.append(
            f"| {i} | {names[i]} | {counts[i]} | {m['eval_counts'][i]} | {_pct(acc[i])} | {m['prediction_counts'][i]} |"
        )
    return "\n".join(lines) + "\n"


def write_plots(run_dir: Path, m: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(m["train_counts"], dtype=np.float64)
    acc = np.array([np.nan if a is None else a for a in m["per_class_accuracy"]], dtype=np.float64)
    preds = np.asarray(m["prediction_counts"], dtype=np.float64)
    title = f"{m['run']} ({m['objective']}, {m['model']})"

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    ok = np.isfinite(acc)
    ax.scatter(counts[ok] + 1, acc[ok], s=14, alpha=0.75)
    if ok.sum() >= 2 and np.ptp(np.log1p(counts[ok])) > 0:
        slope, icpt = np.polyfit(np.log1p(counts[ok]), acc[ok], 1)
        xs = np.linspace(np.log1p(counts[ok]).min(), np.log1p(counts[ok]).max(), 50)
        ax.plot(np.expm1(xs) + 1, slope * xs + icpt, color="C3", lw=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (+1, log scale)")
    ax.set_ylabel("eval accuracy of the class")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(
        f"{title}\nPearson {_fmt(m['pearson_log_freq'], 2)}, Spearman {_fmt(m['spearman_log_freq'], 2)}", fontsize=9
    )
    fig.tight_layout()
    with atomic_path(Path(run_dir) / ACC_PLOT) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)

    order = np.lexsort((np.arange(len(counts)), -counts))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 4.8), dpi=110, sharex=True)
    x = np.arange(len(order))
    ax1.bar(x, counts[order], width=1.0, color="C0")
    ax1.set_yscale("log")
    ax1.set_ylabel("train count")
    ax1.set_title(f"{title}\nclasses by training frequency; entropy/logK {_fmt(m['prediction_entropy_norm'], 2)}", fontsize=9)
    ax2.bar(x, preds[order], width=1.0, color="C1")
    ax2.axhline(m["eval_samples"] / max(1, len(counts)), color="k", lw=1, ls="--", label="balanced")
    ax2.set_ylabel("times predicted")
    ax2.set_xlabel("class rank (most frequent first)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(run_dir) / PRED_PLOT) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


# --------------------------------------------------------------------------- comparing runs

COMPARE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (key, header, format: pct | num (signed) | frac | num1 | int | text)
    ("objective", "objective", "text"),
    ("model", "model", "text"),
    ("train_imbalance", "imbalance", "num1"),
    ("top1", "top-1", "pct"),
    ("top5", "top-5", "pct"),
    ("head_accuracy", "head", "pct"),
    ("medium_accuracy", "medium", "pct"),
    ("tail_accuracy", "tail", "pct"),
    ("pearson_log_freq", "pearson", "num"),
    ("spearman_log_freq", "spearman", "num"),
    ("prediction_entropy_norm", "pred. entropy", "frac"),
    ("images_per_s", "images/s", "int"),
)


def compare_runs(run_dirs: Sequence[Path]) -> list[dict]:
    """One row of key numbers per run (from each run's ``metrics.json``)."""
    if not run_dirs:
        raise CurateError("compare needs at least one RUN folder")
    rows = []
    for rd in run_dirs:
        m = read_metrics(Path(rd))
        row = {"run": Path(rd).name or str(rd)}
        for key, _, _ in COMPARE_COLUMNS:
            row[key] = m.get("training", {}).get(key) if key == "images_per_s" else m.get(key)
        rows.append(row)
    return rows


def format_cell(value: object, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * float(value):.1f}"
    if kind == "num":
        return f"{float(value):+.3f}"
    if kind == "frac":
        return f"{float(value):.3f}"
    if kind == "num1":
        return f"{float(value):.1f}"
    if kind == "int":
        return f"{float(value):.0f}"
    return str(value)


def compare_table(rows: list[dict]):
    """A rich ``Table`` of ``compare_runs`` rows (accuracies in %)."""
    from rich.table import Table

    table = Table(title="runs side by side (accuracy in %; correlations with log train frequency)")
    table.add_column("run", no_wrap=True)
    for _, header, kind in COMPARE_COLUMNS:
        table.add_column(header, justify="left" if kind == "text" else "right")
    for row in rows:
        table.add_row(row["run"], *(format_cell(row[key], kind) for key, _, kind in COMPARE_COLUMNS))
    return table


def compare_tsv(rows: list[dict]) -> str:
    header = ["run"] + [key for key, _, _ in COMPARE_COLUMNS]
    lines = ["\t".join(header)]
    for row in rows:
        lines.append("\t".join([row["run"]] + ["" if row[k] is None else str(row[k]) for k, _, _ in COMPARE_COLUMNS]))
    return "\n".join(lines) + "\n"
