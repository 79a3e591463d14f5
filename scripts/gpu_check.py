"""Summary step of ``scripts/gpu-check.sh``: the two runs' key numbers, and throughput against
open_clip_train's on the same manifest and model.

    python scripts/gpu_check.py RUN_CLIP RUN_SL --openclip-log FILE [--json OUT]

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


def key_numbers(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    t = m.get("training", {})
    return {
        "run": str(run),
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
    ap.add_argument("runs", nargs="+", type=Path, help="evaluated run folders (CLIP first)")
    ap.add_argument("--openclip-log", type=Path, help="open_clip_train's stdout/stderr, captured")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)

    rows = [key_numbers(r) for r in args.runs]
    print("\n== validation reports (balanced eval split; correlations with log train frequency)")
    for r in rows:
        print(
            f"{r['objective']:>15} {r['model']}: top-1 {fmt(r['top1'], 'pct')} (chance {fmt(r['chance'], 'pct')}), "
            f"top-5 {fmt(r['top5'], 'pct')}; head/medium/tail {fmt(r['head'], 'pct')}/{fmt(r['medium'], 'pct')}/"
            f"{fmt(r['tail'], 'pct')}; pearson {fmt(r['pearson'])}, spearman {fmt(r['spearman'])}; "
            f"prediction entropy/logK {fmt(r['prediction_entropy_norm'])}; train imbalance {fmt(r['train_imbalance'], 'int')}"
        )
    print("\n== training throughput (images/s, steady state)")
    for r in rows:
        print(f"{r['objective']:>15} {r['model']} ({r['precision']}, {r['device']}): {fmt(r['images_per_s'], 'int')} images/s "
              f"over {r['steps']} steps, {fmt(r['train_time_s'], 'int')} s")
    summary: dict = {"runs": rows}
    if args.openclip_log is not None:
        theirs, n = openclip_rate(args.openclip_log)
        ours = next((r["images_per_s"] for r in rows if r["objective"] == "clip"), None)
        summary["open_clip_train_images_per_s"] = theirs
        summary["open_clip_train_log_lines"] = n
        if theirs is None:
            print(f"\nopen_clip_train: no throughput lines in {args.openclip_log} (see that log)")
        else:
            print(f"{'open_clip_train':>15} same model, CSV of the same manifest: {fmt(theirs, 'int')} images/s "
                  f"(median of {n} log lines)")
            if ours:
                summary["ratio_curate_over_open_clip_train"] = ours / theirs
                print(f"\nratio curate/open_clip_train (CLIP): {ours / theirs:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
