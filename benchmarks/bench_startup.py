"""Whole-process ``curate`` as a user runs it: start-up and throughput, each a fresh subprocess.

In one run, on captions generated here (``bench_match.make_captions``, ImageNet-1k lemmas):

- ``curate --help``;
- ``curate match`` on 1 caption (with the compiled lexicon already in the cache, as every run
  after the first finds it), with the disambiguation cascade (the default) and without it;
- ``curate match`` on 1M and on 4M captions (Parquet), with and without the cascade;
- what a user's first run on new text meets: ``curate match`` on 1 caption whose words no run
  has seen (so the cascade looks them up in WordNet), and on the 4,000 real LAION captions of
  ``tests/data`` with the cascade's word tables (``$CURATE_CACHE/cascade``) removed first;
- the floor under all of these: a process with no curate code that imports what ``curate match``
  stands on (typer, numpy, polars) and reads the same 1 caption, 1M and 4M captions and writes
  them back with a lower-cased copy of the caption column, with polars; each ``curate match`` row
  is printed as a multiple of it;
- the reference study's method on a subset in this process (per caption: tokenise, lemmatise,
  every synonym of every class; ``curate.match.reference_labels_naive``), extrapolated.

Prints wall and CPU seconds (user + system of the child), peak RSS, captions/s, and captions/s as a
multiple of the study's method. The machine may be shared: the best wall time of ``--repeats``
runs is shown with its CPU time. ``--compare DIR`` runs the same commands from another checkout
(e.g. the commit before a change), taking turns with this one run by run, and prints its figures
and the ratio beside.

    python benchmarks/bench_startup.py [--n 1000000] [--repeats 3] [--compare /path/to/checkout]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]


# a child's own peak RSS, printed on its way out (the kernel's ru_maxrss of a child counts the
# parent's memory it was forked from)
_PEAK = """
import atexit, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("PEAK_KB", line.split()[1], file=sys.stderr)
atexit.register(peak)
"""

# ``python -m curate ARGS``
_WRAP = _PEAK + """
import runpy
sys.argv = ["curate", *sys.argv[1:]]
runpy.run_module("curate", run_name="__main__")
"""

# The floor under any ``curate match`` on this machine, no curate code in it: a process that
# imports the libraries the command stands on (the CLI's typer; numpy and polars for the captions)
# and does the command's input and output with polars (``sys.argv``: source, output; a
# lower-cased copy of the caption column stands in for the matching).
_FLOOR = _PEAK + """
import numpy, polars as pl, typer
src, out = sys.argv[1:3]
lf = pl.scan_parquet(src) if src.endswith(".parquet") else pl.scan_csv(src)
lf.with_columns(pl.col("caption").str.to_lowercase().str.len_bytes().alias("n")).sink_parquet(out)
"""


def run(args: list[str], *, root: Path, env: dict[str, str], code: str = _WRAP) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of one ``python -m curate`` run
    (or of ``python -c code`` with ``args``)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=root, env={**env, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    err_bytes = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = err_bytes.decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"curate {' '.join(args)} (from {root}) failed:\n{err}")
    peaks = [int(line.split()[1]) for line in err.splitlines() if line.startswith("PEAK_KB ")]
    return wall, usage.ru_utime + usage.ru_stime, (peaks[-1] / 1024 if peaks else float("nan"))


def study_rate(captions: list[str]) -> float:
    from curate.match import reference_labels_naive
    from curate.vocab import load_vocab

    vocab = load_vocab("imagenet1k")
    t0 = time.perf_counter()
    for c in captions:
        reference_labels_naive(c, vocab)
    return len(captions) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="captions of the smaller source (the larger one has 4x)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each short command (best wall time shown)")
    ap.add_argument("--repeats-large", type=int, default=1, help="runs of each 1M/4M command")
    ap.add_argument("--reference-subset", type=int, default=1_000, help="captions for the study's method")
    ap.add_argument("--compare", type=Path, default=None, help="another checkout of curate to run the same commands from")
    args = ap.parse_args()

    from bench_match import make_captions

    from curate.vocab import load_vocab

    lemmas = sorted({lem for ls in load_vocab("imagenet1k")["lemmas"].to_list() for lem in ls})
    roots = [("this checkout", REPO)] + ([("--compare", args.compare.resolve())] if args.compare else [])
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        caps = make_captions(args.n, lemmas)
        df = pl.DataFrame({"uid": [f"u{i}" for i in range(args.n)], "caption": caps})
        small, large = tmp / "captions-1x.parquet", tmp / "captions-4x.parquet"
        df.write_parquet(small, row_group_size=100_000)
        pl.concat([df.with_columns(pl.col("uid") + f"-{k}") for k in range(4)]).write_parquet(large, row_group_size=100_000)
        one = tmp / "one.csv"
        one.write_text("caption\nA Tiger Shark and two geese\n", encoding="utf-8")
        real = REPO / "tests" / "data" / "laion_4000.parquet"
        made = iter(range(1_000_000))

        def new_caption() -> list[str]:
            # a caption no earlier run has read: its words are new to the cascade's word tables
            k = next(made)
            path = tmp / f"new-{k}.csv"
            path.write_text(f"caption\nA grizzled{k} tiger near the Zorbl{k} Harbour snapped at dusk\n", encoding="utf-8")
            return match(path)

        def fresh_tables() -> list[str]:
            shutil.rmtree(tmp / "cache" / "cascade", ignore_errors=True)
            return match(real)
        env = {**os.environ, "CURATE_CACHE": str(tmp / "cache"), "CURATE_NO_PROGRESS": "1"}
        env.pop("PYTHONPATH", None)
        # an installed package has its bytecode compiled (pip does it); so do these runs
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        out = tmp / "out.parquet"

        def match(src: Path, *extra: str) -> list[str]:
            return ["match", str(src), "--vocab", "imagenet1k", "--out", str(out), *extra]

        cases = [
            ("curate --help", ["--help"], 0, args.repeats),
            ("match, 1 caption", match(one), 1, args.repeats),
            ("match, 1 caption, --no-disambiguate", match(one, "--no-disambiguate"), 1, args.repeats),
            (f"match, {args.n:,} captions, --no-disambiguate", match(small, "--no-disambiguate"), args.n, args.repeats_large),
            (f"match, {4 * args.n:,} captions, --no-disambiguate", match(large, "--no-disambiguate"), 4 * args.n, args.repeats_large),
            (f"match, {args.n:,} captions", match(small), args.n, args.repeats_large),
            (f"match, {4 * args.n:,} captions", match(large), 4 * args.n, args.repeats_large),
            ("match, 1 caption of new words", new_caption, 1, args.repeats),
            ("match, 4,000 real captions, new word tables", fresh_tables, 4_000, args.repeats),
        ]
        # the floor (_FLOOR) under three of them: the same input and output with no curate code
        floors = {"match, 1 caption": one, f"match, {args.n:,} captions": small, f"match, {4 * args.n:,} captions": large}
        for _, root in roots:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "curate")], check=False, stdout=subprocess.DEVNULL)
            # the first runs compile the lexicons into the cache and the loops (and cascade) into theirs
            run(match(one), root=root, env=env)
            run(match(one, "--no-disambiguate"), root=root, env=env)
            run(match(small, "--no-disambiguate"), root=root, env=env)
            run(match(small), root=root, env=env)  # the compiled cascade's first compile, where there is one
        # the checkouts take turns, run by run, so a busy spell of a shared machine hits both alike
        runs: dict[str, list[list[tuple[float, float, float]]]] = {label: [[] for _ in cases] for label, _ in roots}
        floor_runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in floors}
        for i, (name, a, _, repeats) in enumerate(cases):
            for _ in range(repeats):
                for label, root in roots:
                    runs[label][i].append(run(a() if callable(a) else a, root=root, env=env))
                if name in floors:  # taking turns with the command it is the floor of
                    floor_runs[name].append(run([str(floors[name]), str(out)], root=REPO, env=env, code=_FLOOR))
        results = {label: [min(r) for r in per_case] for label, per_case in runs.items()}
        floor = {name: min(r) for name, r in floor_runs.items()}
        study = study_rate(caps.head(args.reference_subset).to_list())

    print(f"{args.n:,} generated captions (imagenet1k), cores: {os.cpu_count()}; the study's method: {study:,.0f} captions/s "
          f"(in process, on {args.reference_subset:,} captions)")
    head = f"{'command':44s} {'wall s':>7s} {'CPU s':>7s} {'RSS MB':>7s} {'captions/s':>11s} {'x study':>9s}"
    if args.compare:
        head += f" | {'before wall':>11s} {'CPU s':>7s} {'captions/s':>11s} {'speed-up':>8s}"
    print(head)
    for i, (name, _, n, _) in enumerate(cases):
        wall, cpu, rss = results["this checkout"][i]
        rate = f"{n / wall:>11,.0f}" if n > 1 else f"{'':>11s}"
        times = f"{n / wall / study:>8,.0f}x" if n > 1 else f"{'':>9s}"
        line = f"{name:44s} {wall:>7.2f} {cpu:>7.2f} {rss:>7.0f} {rate} {times}"
        if args.compare:
            w0, c0, _ = results["--compare"][i]
            rate0 = f"{n / w0:>11,.0f}" if n > 1 else f"{'':>11s}"
            line += f" | {w0:>11.2f} {c0:>7.2f} {rate0} {w0 / wall:>7.2f}x"
        print(line)
    print("the floor: a process importing numpy, polars and typer that reads the same source and writes it back with")
    print("a lower-cased copy of the caption column (polars), no curate code: what any `curate match` here costs at least")
    for i, (name, _, n, _) in enumerate(cases):
        if name not in floor:
            continue
        wall, cpu, rss = floor[name]
        rate = f"{n / wall:>11,.0f}" if n > 1 else f"{'':>11s}"
        mine = results["this checkout"][i][0]
        print(f"{name.replace('match, ', 'floor, '):44s} {wall:>7.2f} {cpu:>7.2f} {rss:>7.0f} {rate}   curate match: {mine / wall:.2f}x the floor's wall")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (other jobs share these cores: CPU seconds are the steadier figure)")


if __name__ == "__main__":
    main()
