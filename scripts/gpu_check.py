"""Helpers of ``scripts/gpu-check.sh``.

    python scripts/gpu_check.py imagefolder MANIFEST DIR
        write the manifest's eval images as an ImageFolder (PNG, one wnid folder per class)
    python scripts/gpu_check.py summary RUN_CLIP RUN_SL --openclip-log FILE [--json OUT]
        the runs' key numbers per evaluation set, and throughput against open_clip_train's

open_clip_train logs ``Batch (t): 0.123, 2081.3/s, 2081.3/s/gpu`` every few steps; the median of
those lines after the first two (warm-up, compilation, worker start) is its steady throughput.
Ours is ``train_summary.json``'s ``images_per_s`` (wall time between device syncs, loading and
augmentation included, first step excluded).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

RATE = re.compile(r"Batch \(t\): [0-9.]+, ([0-9.eE+]+)/s, ([0-9.eE+]+)/s/gpu")


def openclip_rate(log: Path) -> tuple[float | None, int]:
    """Median images/s per GPU from an open_clip_train log, and how many lines it came from."""
    if not log.is_file():
        return None, 0
    rates = [float(m.group(2)) for m in RATE.finditer(log.read_text(errors="replace"))]
    steady = rates[2:] if len(rates) > 3 else rates
    return (statistics.median(steady) if steady else None), len(steady)


def write_imagefolder(manifest: Path, out: Path) -> int:
    """The eval split's images as ``out/WNID/NNNNN.png`` (lossless: scores match the held-out split)."""
    import numpy as np
    from PIL import Image

    from curate.loader import open_shards

    shards = open_shards(manifest, "eval")
    wnids = shards.index.get("wnids") or shards.class_names
    images, _ = shards.gather(np.arange(shards.num_samples))
    for i, (img, label) in enumerate(zip(images, shards.labels)):
        folder = out / (wnids[label] or shards.class_names[label])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i:05d}.png")
    return int(shards.num_samples)


def key_numbers(run: Path) -> list[dict]:
    saved = json.loads((run / "metrics.json").read_text())
    return [_key_numbers(run, m) for m in (saved.get("datasets") or {"heldout": saved}).values()]


def _key_numbers(run: Path, m: dict) -> dict:
    t = m.get("training", {})
    return {
        "run": str(run),
        "dataset": m.get("dataset", "heldout"),
        "objective": m["objective"],
        "model": m["model"],
        "top1": m["top1"],
        "top5": m["top5"],
        "chance": m["chance_top1"],
        "head": m["head_accuracy"],
        "medium": m["medium_accuracy"],
        "tail": m["tail_accuracy"],
        "pearson": m["pearson_log_freq"],
        "spearman": m["spearman_log_freq"],
        "prediction_entropy_norm": m["prediction_entropy_norm"],
        "train_imbalance": m["train_imbalance"],
        "nc_within_between": m.get("nc_within_between"),
        "images_per_s": t.get("images_per_s"),
        "steps": t.get("steps"),
        "train_time_s": t.get("train_time_s"),
        "precision": t.get("precision"),
        "device": t.get("device"),
    }


def fmt(x: object, kind: str = "num") -> str:
    if x is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * float(x):.1f}%"
    if kind == "int":
        return f"{float(x):,.0f}"
    return f"{float(x):+.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    folder = sub.add_parser("imagefolder", help="the eval images as an ImageFolder")
    folder.add_argument("manifest", type=Path)
    folder.add_argument("out", type=Path)
    summary = sub.add_parser("summary", help="key numbers and throughput")
    summary.add_argument("runs", nargs="+", type=Path, help="evaluated run folders (CLIP first)")
    summary.add_argument("--openclip-log", type=Path, help="open_clip_train's stdout/stderr, captured")
    summary.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    if args.command == "imagefolder":
        print(f"{write_imagefolder(args.manifest, args.out)} images in {args.out}")
        return 0

    rows = [row for r in args.runs for row in key_numbers(r)]
    print("\n== validation reports (per evaluation set; correlations with log train frequency)")
    for r in rows:
        print(
            f"{r['objective']:>24} {r['model']} on {r['dataset']}: top-1 {fmt(r['top1'], 'pct')} (chance {fmt(r['chance'], 'pct')}), "
            f"top-5 {fmt(r['top5'], 'pct')}; head/medium/tail {fmt(r['head'], 'pct')}/{fmt(r['medium'], 'pct')}/"
            f"{fmt(r['tail'], 'pct')}; pearson {fmt(r['pearson'])}, spearman {fmt(r['spearman'])}; "
            f"prediction entropy/logK {fmt(r['prediction_entropy_norm'])}; tr(Sw Sb+) {fmt(r['nc_within_between'])}; "
            f"train imbalance {fmt(r['train_imbalance'], 'int')}"
        )
    print("\n== training throughput (images/s, steady state)")
    for r in rows:
        if r["dataset"] != "heldout":
            continue
        print(f"{r['objective']:>24} {r['model']} ({r['precision']}, {r['device']}): {fmt(r['images_per_s'], 'int')} images/s "
              f"over {r['steps']} steps, {fmt(r['train_time_s'], 'int')} s")
    summary: dict = {"runs": rows}
    if args.openclip_log is not None:
        theirs, n = openclip_rate(args.openclip_log)
        ours = next((r["images_per_s"] for r in rows if r["objective"] == "clip" and r["dataset"] == "heldout"), None)
        summary["open_clip_train_images_per_s"] = theirs
        summary["open_clip_train_log_lines"] = n
        if theirs is None:
            print(f"\nopen_clip_train: no throughput lines in {args.openclip_log} (see that log)")
        else:
            print(f"{'open_clip_train':>24} same model, CSV of the same manifest: {fmt(theirs, 'int')} images/s "
                  f"(median of {n} log lines)")
            if ours:
                summary["ratio_curate_over_open_clip_train"] = ours / theirs
                print(f"\nratio curate/open_clip_train (CLIP): {ours / theirs:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
