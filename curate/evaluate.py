"""The validation report of a training run: accuracy on an evaluation set, read against the
training distribution.

Owns the metric functions (top-k and per-class accuracy, correlation of per-class accuracy with
log training frequency, head / medium / tail accuracy, entropy of the prediction histogram, the
study's neural-collapse measures), the evaluation of a run folder on a set of ``curate.evalsets``
(``metrics.json`` keyed by dataset; for the held-out split also ``report.md``,
``per_class_accuracy.png``, ``predictions.png``) and the side-by-side comparison of runs
(``curate compare``).

Every objective is scored the same way: its image features times its head
(``curate.objectives``). CLIP's head is zero-shot: each class is the mean text embedding of its
name in a prompt set. Supervised runs use their own classifier.
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


# --------------------------------------------------------------------------- neural collapse


def _coherence(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of unit ``vectors`` ``[C, D]``: the mean and the largest ``|cos + 1/(C-1)|`` to the
    other rows (0 for a simplex equiangular tight frame, the collapsed optimum)."""
    c = vectors.shape[0]
    g = vectors @ vectors.T + 1.0 / (c - 1)
    np.fill_diagonal(g, 0.0)
    g = np.abs(g)
    return g.sum(axis=1) / (c - 1), g.max(axis=1)


def neural_collapse(features: np.ndarray, labels: np.ndarray, weight: np.ndarray, train_counts: np.ndarray) -> dict:
    """The study's neural-collapse measures (its ``get_nc_metrics``), per class and in summary.

    - ``nc_within_between``: ``tr(Sw_c Sb^+)`` per class, ``Sw_c`` the class's within-class
      scatter over all ``N`` images and ``Sb`` the between-class covariance of the class means;
      the summary is the sum (``tr(Sw Sb^+)``, lower = more collapsed).
    - ``nc_cos_means`` / ``nc_cos_weights``: mean ``|cos + 1/(C-1)|`` of each centred class mean
      (classifier weight row) to the others, and ``..._nearest`` the largest; 0 for a simplex ETF.

    Classes without eval images are left out. Spearman correlations of the per-class values with
    log training frequency follow (``*_spearman_log_freq``).
    """
    from scipy import stats

    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    k = len(train_counts)
    present = np.flatnonzero(np.bincount(y, minlength=k) > 0)
    if len(present) < 3:
        return {}
    n_c = np.bincount(y, minlength=k).astype(np.float64)
    means = np.zeros((k, f.shape[1]))
    np.add.at(means, y, f)
    means[present] /= n_c[present, None]
    centred = means[present] - means[present].mean(axis=0, keepdims=True)
    sb = centred.T @ centred / len(present)
    z = f - means[y]
    quad = np.einsum("nd,nd->n", z @ np.linalg.pinv(sb), z)  # z^T Sb^+ z per image
    sw_sb = np.bincount(y, weights=quad, minlength=k)[present] / len(y)
    m_unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    w = np.asarray(weight, dtype=np.float64)[present]
    w_unit = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    cos_m, cos_m_near = _coherence(m_unit)
    cos_w, cos_w_near = _coherence(w_unit)
    out: dict = {}
    logf = log_frequency(np.asarray(train_counts)[present])
    for name, per_class, total in (
        ("nc_within_between", sw_sb, float(sw_sb.sum())),
        ("nc_cos_means", cos_m, float(cos_m.mean())),
        ("nc_cos_weights", cos_w, float(cos_w.mean())),
        ("nc_cos_means_nearest", cos_m_near, float(cos_m_near.mean())),
        ("nc_cos_weights_nearest", cos_w_near, float(cos_w_near.mean())),
    ):
        out[name] = total
        rho = None
        if np.ptp(per_class) > 0 and np.ptp(logf) > 0:
            rho = _finite_or_none(stats.spearmanr(logf, per_class).statistic)
        out[f"{name}_spearman_log_freq"] = rho
        full = [None] * k
        for i, v in zip(present.tolist(), per_class.tolist()):
            full[i] = v
        out[f"{name}_per_class"] = full
    return out


# --------------------------------------------------------------------------- evaluating a run


def dataset_key(eval_key: str, *, classes: str | None, prompts: str | None) -> str:
    """How a score is keyed in metrics.json: ``heldout``, ``imagefolder:val[imagenet100]@openai80``."""
    subset = classes.replace("\\", "/").rsplit("/", 1)[-1] if classes else None  # a vocab file: its name
    return eval_key + (f"[{subset}]" if subset else "") + (f"@{prompts}" if prompts else "")


def evaluate_run(
    run_dir: Path,
    *,
    dataset: str = "heldout",
    classes: str | None = None,
    prompts: str | None = None,
    device: str = "auto",
    batch_size: int = 256,
    workers: int = 0,
) -> dict:
    """Score a run on ``dataset`` (``heldout`` or ``imagefolder:DIR``), optionally on a class
    subset, and record it in the run's metrics.json under its dataset key; the held-out score
    also writes report.md and the plots. Returns that dataset's metrics."""
    import torch

    from curate.evalsets import class_subset, open_eval_set
    from curate.models import prompt_set
    from curate.objectives import OBJECTIVES
    from curate.runs import autocast, load_trained, read_summary, resolve_device
    from curate.ui import track

    run_dir = Path(run_dir)
    if batch_size < 1:
        raise CurateError(f"--batch-size must be at least 1 (got {batch_size})")
    dev = resolve_device(device)
    meta, cfg, model = load_trained(run_dir, device=dev)
    objective = OBJECTIVES[cfg.objective]
    class_names = list(meta["class_names"])
    wnids = list(meta.get("wnids") or [])
    num_classes = len(class_names)
    image_size = int(meta["image_size"])
    try:
        evalset = open_eval_set(dataset, meta=meta, image_size=image_size)
    except CurateError as e:
        raise CurateError(f"{run_dir}: {e}") from None
    train_counts = np.asarray(meta.get("train_counts") or _train_counts(meta), dtype=np.int64)
    chosen_prompts = prompt_set(prompts) if prompts else cfg.prompts
    precision = cfg.precision if dev.type == "cuda" else "fp32"
    amp = torch.bfloat16 if precision == "bf16" else None
    subset = class_subset(classes, class_names=class_names, wnids=wnids) if classes else np.arange(num_classes)
    remap = np.full(num_classes, -1, dtype=np.int64)
    remap[subset] = np.arange(len(subset))

    with torch.no_grad():
        head = objective.head(model, class_names, prompts=chosen_prompts, device=dev, autocast_dtype=amp)
    cols = torch.as_tensor(subset, device=dev)
    k = min(5, len(subset))
    tops, labels, feats = [], [], []
    unlabelled = 0
    from curate.loader import gpu_augment

    with torch.no_grad():
        total = -(-evalset.num_images // batch_size)
        for images, y in track(evalset.batches(batch_size, dev, workers=workers), description=f"eval {run_dir.name}", total=total):
            # a row naming no class (label -1, --keep-unmatched) has nothing to score: left out, counted
            unlabelled += int((y < 0).sum())
            keep = (y >= 0) & (torch.as_tensor(remap, device=dev)[y.clamp(min=0)] >= 0)
            if not bool(keep.all()):
                images, y = images[keep], y[keep]
            if len(y) == 0:
                continue
            x = gpu_augment(images, train=False, out_size=image_size)
            with autocast(dev, precision):
                f = objective.features(model, x).float()
            logits = head.logits(f)[:, cols]
            tops.append(logits.topk(k, dim=1).indices.cpu())
            labels.append(torch.as_tensor(remap, device=dev)[y].cpu())
            feats.append(f.cpu())
    if not labels:
        raise CurateError(f"{run_dir}: --dataset {dataset}: no images of the --classes {classes} subset")
    topk = torch.cat(tops).numpy()
    y = torch.cat(labels).numpy().astype(np.int64)
    counts = train_counts[subset]
    metrics = compute_metrics(topk, y, counts)
    metrics.update(neural_collapse(torch.cat(feats).numpy(), y, head.weight[cols].cpu().numpy(), counts))
    key = dataset_key(evalset.key, classes=classes, prompts=prompts)
    names = [class_names[i] for i in subset]
    metrics = {
        "run": run_dir.name,
        "dataset": key,
        "dataset_description": evalset.description + (f", classes of {classes}" if classes else ""),
        "manifest": str(meta["manifest"]),
        "objective": cfg.objective,
        "model": cfg.model,
        "scoring": f"zero-shot ({chosen_prompts} prompts)" if cfg.objective == "clip" else "classifier",
        "chance_top1": 1.0 / len(subset),
        "skipped": {**evalset.skipped, **({"unlabelled": unlabelled} if unlabelled else {})},
        **metrics,
        "class_names": names,
        "training": read_summary(run_dir),
    }
    record_metrics(run_dir, key, metrics)
    return metrics


def _train_counts(meta: dict) -> np.ndarray:
    from curate.loader import open_shards

    shards = open_shards(Path(meta["manifest"]), split="train")
    labels = np.asarray(shards.labels, dtype=np.int64)
    return np.bincount(labels[labels >= 0], minlength=int(meta["num_classes"]))  # -1: no class


def record_metrics(run_dir: Path, key: str, metrics: dict) -> None:
    """metrics.json holds every dataset's metrics under ``datasets``; the held-out split's are also
    its top level (what ``report.md`` shows). The held-out score rewrites the report and plots."""
    path = Path(run_dir) / METRICS_FILE
    old = read_metrics(run_dir) if path.is_file() else {}
    datasets = dict(old.get("datasets") or {})
    datasets[key] = metrics
    top = metrics if key == "heldout" else {k: v for k, v in old.items() if k != "datasets"}
    out = {**top, "datasets": datasets}
    write_text_atomic(path, json.dumps(out, indent=2) + "\n")
    if key == "heldout":
        write_plots(run_dir, metrics)
        write_text_atomic(Path(run_dir) / REPORT_FILE, render_report(out))


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
        *_nc_lines(m),
        *_dataset_lines(m),
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


def _nc_lines(m: dict) -> list[str]:
    if m.get("nc_within_between") is None:
        return []
    return [
        f"- neural collapse (eval features): tr(Sw Sb^+) {_fmt(m['nc_within_between'])}, "
        f"class-mean coherence {_fmt(m['nc_cos_means'])}, classifier coherence {_fmt(m['nc_cos_weights'])} (0 = simplex ETF)",
    ]


def _dataset_lines(m: dict) -> list[str]:
    others = {k: v for k, v in (m.get("datasets") or {}).items() if k != "heldout"}
    if not others:
        return []
    lines = ["", "## Other evaluation sets", "", "| dataset | images | top-1 | top-5 | Spearman ρ (log freq) |", "|---|---|---|---|---|"]
    for key, d in others.items():
        lines.append(f"| {key} | {d['eval_samples']} | {_pct(d['top1'])} | {_pct(d['top5'])} | {_fmt(d['spearman_log_freq'])} |")
    return lines


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
    ("dataset", "dataset", "text"),
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
    ("nc_within_between", "tr(SwSb+)", "frac"),
    ("images_per_s", "images/s", "int"),
)


def compare_runs(run_dirs: Sequence[Path]) -> list[dict]:
    """One row of key numbers per run and dataset it was scored on (each run's ``metrics.json``)."""
    if not run_dirs:
        raise CurateError("compare needs at least one RUN folder")
    rows = []
    for rd in run_dirs:
        m = read_metrics(Path(rd))
        datasets = m.get("datasets") or {"heldout": m}
        for key, d in sorted(datasets.items(), key=lambda kv: kv[0] != "heldout"):
            row = {"run": Path(rd).name or str(rd)}
            for col, _, _ in COMPARE_COLUMNS:
                row[col] = d.get("training", {}).get(col) if col == "images_per_s" else d.get(col)
            row["dataset"] = key
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
