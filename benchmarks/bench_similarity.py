"""The similarity stage, side by side in one run: text embedding and nearest-neighbour search.

1. Embedding throughput on the same web-like captions and the same model (randomly initialised
   weights: the cost is the architecture's, and no weights are downloaded): curate's
   ``TextEncoder.encode`` (captions sorted by token length, each batch run only up to its longest
   caption) against a plain open_clip loop (tokenize, ``encode_text`` on the full context,
   normalise), batch for batch; the largest difference between the two is printed too.
2. kNN at 100,000 x 512 (normalised vectors in 1,000 clusters, 1,000 queries, k = 10): faiss's exact
   IndexFlatIP and curate's IVF index against numpy brute force (matrix product + argpartition per
   query block); the IVF's recall@10 against the exact answer.
3. Memory of ``curate embed`` (tiny model) at N and 4N captions: peak RSS of a child process
   (flat memory means about equal; a shard of captions is the most ever held).

    python benchmarks/bench_similarity.py [--model ViT-B-32] [--captions 512] [--parts embed,knn,memory] [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = (
    "the a of and with in on for new best sale women men kids blue red black white large small vintage "
    "style hd wallpaper design home garden toy beautiful cute old modern art print poster photo image "
    "stock vector dog cat koala tench banana bus beach park water wood gift set 2019 3d 4k quality"
).split()


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 16, size=n)  # web alt-text: mostly short, well under 77 tokens
    return [" ".join(rng.choice(WORDS, size=int(k))) for k in lengths]


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_embedding(model_name: str, n: int, batch_size: int, device: str = "cpu") -> None:
    import logging

    import open_clip
    import torch
    import torch.nn.functional as F

    from curate.embed import encoder_from_model
    from curate.models import register_tiny

    register_tiny()
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    dev = torch.device(device)
    model = open_clip.create_model(model_name, pretrained=None).eval().to(dev)
    enc = encoder_from_model(f"random {model_name}", model_name, model, dev)
    texts = captions(n)
    tokenizer = open_clip.get_tokenizer(model_name)

    def plain() -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(texts), batch_size):
                out.append(F.normalize(model.encode_text(tokenizer(texts[s : s + batch_size]).to(dev)), dim=-1).cpu().numpy())
        return np.concatenate(out)

    def curate() -> np.ndarray:
        return enc.encode(texts, batch_size=batch_size)

    t_plain, a = timed(plain)
    t_curate, b = timed(curate)
    where = f"CPU x{torch.get_num_threads()} threads" if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    print(f"embedding {n:,} captions, {model_name}, batch {batch_size}, {where}")
    print(f"  plain open_clip loop     {n / t_plain:10,.0f} captions/s")
    print(f"  curate TextEncoder       {n / t_curate:10,.0f} captions/s   ratio {t_plain / t_curate:.2f}x")
    print(f"  largest difference       {np.abs(a - b).max():.2e}")


def bench_knn(n: int, d: int, nq: int, k: int) -> None:
    from curate.knn import build_index, search

    # clustered like text embeddings (uniform random vectors have no neighbourhoods for an IVF
    # to find): 1,000 topics, each caption its topic's direction plus noise (cosine ~0.5 within)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = 1.0 / np.sqrt(d)
    x = centres[rng.integers(0, 1000, n)] + noise * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = centres[rng.integers(0, 1000, nq)] + noise * rng.standard_normal((nq, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    def brute() -> np.ndarray:
        out = np.empty((nq, k), dtype=np.int64)
        for s in range(0, nq, 256):
            sims = q[s : s + 256] @ x.T
            part = np.argpartition(-sims, k, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
            out[s : s + 256] = np.take_along_axis(part, order, axis=1)
        return out

    t_np, exact = timed(brute, 2)
    t_build_flat, flat = timed(lambda: build_index(x, kind="flat"))
    t_flat, (_, ids_flat) = timed(lambda: search(flat, q, k), 2)
    t_build_ivf, ivf = timed(lambda: build_index(x, kind="ivf"))
    t_ivf, (_, ids_ivf) = timed(lambda: search(ivf, q, k), 2)
    agree = np.mean([len(set(a) & set(b)) / k for a, b in zip(exact, ids_flat)])
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(exact, ids_ivf)])
    print(f"kNN: {n:,} x {d} database, {nq:,} queries, k = {k}")
    print(f"  numpy brute force        {nq / t_np:10,.0f} queries/s")
    print(f"  faiss flat (exact)       {nq / t_flat:10,.0f} queries/s   ratio {t_np / t_flat:.2f}x  (build {t_build_flat:.2f} s, agreement {agree:.4f})")
    print(f"  faiss {ivf.nlist}-list IVF, nprobe {ivf.nprobe} {nq / t_ivf:6,.0f} queries/s   ratio {t_np / t_ivf:.2f}x  (build {t_build_ivf:.2f} s, recall@{k} {recall:.3f})")


CHILD = """
import sys, polars as pl
from curate.embed import embed_source, load_encoder
n, out, ckpt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, sys.argv[4])
from bench_similarity import captions
src = out + ".parquet"
pl.DataFrame({"uid": [f"u{i}" for i in range(n)], "caption": captions(n)}).write_parquet(src)
embed_source(src, load_encoder("openclip:curate-tiny:" + ckpt, device="cpu"), out, shard_size=4096)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent, VmHWM starts afresh
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def bench_memory(n: int) -> None:
    import torch

    from curate.models import create_clip

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "tiny.pt"
        torch.save(create_clip("tiny").state_dict(), ckpt)
        env = {**os.environ, "CURATE_NO_PROGRESS": "1"}
        rss = {}
        for size in (n, 4 * n):
            t = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(size), str(Path(tmp) / f"e{size}"), str(ckpt), str(Path(__file__).parent)],
                capture_output=True, text=True, env=env, check=True,
            )
            rss[size] = int(done.stdout.split()[-1]) / 1024
            print(f"curate embed, tiny model, {size:,} captions: peak RSS {rss[size]:,.0f} MiB, {size / (time.perf_counter() - t):,.0f} captions/s end to end")
        print(f"  memory ratio 4N / N: {rss[4 * n] / rss[n]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--captions", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--memory-n", type=int, default=8192)
    ap.add_argument("--device", default="cpu", help="where the embedding part runs (cpu or cuda)")
    ap.add_argument("--parts", default="embed,knn,memory", help="which parts to run (comma-separated)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.model, args.captions, args.n, args.memory_n = "curate-tiny", 1024, 20_000, 2048
    parts = set(args.parts.split(","))
    if "embed" in parts:
        bench_embedding(args.model, args.captions, args.batch_size, args.device)
    if "knn" in parts:
        bench_knn(args.n, 512, 1000, 10)
    if "memory" in parts:
        bench_memory(args.memory_n)
    print(f"(peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB)")


if __name__ == "__main__":
    main()
