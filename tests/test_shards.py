"""`curate shards`: img2dataset download over a loopback server, tensor shards, resume, bad input.

The download test runs the real img2dataset (a subprocess, seconds to start) against generated
images on 127.0.0.1, some of them dead or corrupt. The tensorize tests write img2dataset-shaped
webdataset folders themselves, so they run without img2dataset.
"""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_helpers import run_cli
from PIL import Image

from curate.errors import CurateError
from curate.shards import failure_reason, manifest_splits, tensorize, tokenize, verify_shards

CLASSES = ["tabby cat", "golden retriever", "red fox"]
MANIFEST_COLUMNS = (
    "uid",
    "label",
    "wnid",
    "class_name",
    "caption",
    "source_caption",
    "url",
    "path",
    "source",
    "split",
)



def image_bytes(label: int, i: int, *, size: tuple[int, int] = (40, 48), fmt: str = "JPEG") -> bytes:
    """A small image whose mean colour says its class (so a test can tell images apart)."""
    rng = np.random.default_rng(1000 * label + i)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]][label], dtype=np.int16)
    arr = np.clip(base + rng.integers(-30, 30, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def write_classes(root: Path) -> None:
    pl.DataFrame(
        {"label": [0, 1, 2], "wnid": ["n02123045", "n02099601", "n02119022"], "name": CLASSES},
        schema={"label": pl.Int32, "wnid": pl.Utf8, "name": pl.Utf8},
    ).write_parquet(root / "classes.parquet")


def manifest_frame(rows: list[dict[str, object]], split: str) -> pl.DataFrame:
    full = [
        {
            "uid": r["uid"],
            "label": r["label"],
            "wnid": None,
            "class_name": CLASSES[int(r["label"])],  # type: ignore[call-overload]
            "caption": r["caption"],
            "source_caption": r["caption"],
            "url": r.get("url"),
            "path": r.get("path"),
            "source": "test",
            "split": split,
        }
        for r in rows
    ]
    schema = {c: pl.Utf8 for c in MANIFEST_COLUMNS} | {"label": pl.Int32}
    return pl.DataFrame(full, schema=schema)


# ---------------------------------------------------------------------------------------------
# download + tensorize through the CLI, against a loopback server


@pytest.mark.slow
def test_shards_end_to_end_over_http(
    loopback_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served, local = loopback_server.root, tmp_path / "local"
    local.mkdir()
    train, expected = [], {}
    for i in range(22):
        label, uid = i % 3, f"tr-{i:03d}"
        row: dict[str, object] = {
            "uid": uid,
            "label": label,
            "caption": f"a photo of a {CLASSES[label]} number {i}",
        }
        if i in (3, 11):  # dead links
            row["url"] = loopback_server.url(f"gone/{uid}.jpg")
        elif i == 7:  # served, but not an image
            (served / f"{uid}.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
            row["url"] = loopback_server.url(f"{uid}.jpg")
        elif i == 15:  # the server answers with an error status
            (served / f"{uid}.jpg").write_bytes(image_bytes(label, i))
            loopback_server.fail(f"{uid}.jpg", 500)
            row["url"] = loopback_server.url(f"{uid}.jpg")
        elif i == 13:  # the connection drops midway through the body
            (served / f"{uid}.jpg").write_bytes(image_bytes(label, i))
            loopback_server.drop_after(f"{uid}.jpg", 100)
            row["url"] = loopback_server.url(f"{uid}.jpg")
        elif i == 18:  # a local file named by path only
            (local / f"{uid}.png").write_bytes(image_bytes(label, i, fmt="PNG"))
            row["path"] = str(local / f"{uid}.png")
            expected[uid] = row
        elif i == 19:  # a file:// URL
            (local / f"{uid}.jpg").write_bytes(image_bytes(label, i))
            row["url"] = (local / f"{uid}.jpg").as_uri()
            expected[uid] = row
        elif i == 20:  # neither url nor path
            pass
        else:
            (served / f"{uid}.jpg").write_bytes(image_bytes(label, i))
            row["url"] = loopback_server.url(f"{uid}.jpg")
            expected[uid] = row
        train.append(row)
    evals = []
    for i in range(5):
        uid = f"ev-{i}"
        row = {
            "uid": uid,
            "label": i % 3,
            "caption": CLASSES[i % 3],
            "url": loopback_server.url(f"{uid}.jpg"),
        }
        if i != 2:
            (served / f"{uid}.jpg").write_bytes(image_bytes(i % 3, 100 + i))
        evals.append(row)
    m = tmp_path / "manifests" / "toy"
    m.mkdir(parents=True)
    manifest_frame(train, "train").write_parquet(m / "manifest.parquet")
    manifest_frame(evals, "eval").write_parquet(m / "eval.parquet")
    write_classes(m)

    args = [
        "shards",
        str(m),
        "--resolution",
        "32",
        "-p",
        "1",
        "-t",
        "4",
        "--shard-size",
        "8",
        "-w",
        "1",
        "--json",
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads(out)
    dl = {d["split"]: d for d in report["download"]}
    assert dl["train"]["rows"] == 22 and dl["train"]["succeeded"] == len(expected) == 16
    assert dl["train"]["success_rate"] == pytest.approx(16 / 22)
    reasons = dl["train"]["failed"]
    assert reasons == {
        "failed_to_download: HTTP Error 404: Not Found": 2,
        "failed_to_download: HTTP Error 500: Internal Server Error": 1,
        "failed_to_download: IncompleteRead (connection closed before the body ended)": 1,
        "failed_to_resize: Image decoding error": 1,
        "skipped: no url or path in the manifest": 1,
    }
    assert dl["eval"]["succeeded"] == 4 and dl["eval"]["failed"] == {
        "failed_to_download: HTTP Error 404: Not Found": 1
    }
    saved = json.loads((m / "images" / "train.report.json").read_text())
    assert saved["failed"] == reasons

    from curate.loader import open_shards

    ds = open_shards(m, "train")
    assert sorted(ds.uids.tolist()) == sorted(expected)
    assert ds.num_classes == 3 and ds.class_names == CLASSES and ds.resolution == 32
    index = ds.index
    assert index["num_samples"] == 16 and index["manifest"]["sha256"] == manifest_splits(m)[0].sha256
    by_uid = {u: i for i, u in enumerate(ds.uids.tolist())}
    images, tokens = ds.gather(np.arange(len(ds)))
    want_tokens = tokenize([str(expected[u]["caption"]) for u in ds.uids.tolist()])
    np.testing.assert_array_equal(tokens, want_tokens)
    for uid, row in expected.items():
        i = by_uid[uid]
        assert ds.labels[i] == row["label"]
        # the image that arrived is the one served: its dominant channel is its class's
        assert int(images[i].reshape(3, -1).mean(axis=1).argmax()) == row["label"]
    ev = open_shards(m / "shards" / "eval")
    assert sorted(ev.uids.tolist()) == ["ev-0", "ev-1", "ev-3", "ev-4"]
    verify_shards(m / "shards" / "train")

    # resume: a lost img2dataset shard is fetched again, and only that one
    first_tar = sorted((m / "images" / "train").glob("*.tar"))[0]
    served_before = len(loopback_server.requests)
    for f in (m / "images" / "train").glob(f"{first_tar.stem}*"):
        f.unlink()
    tensor_files = sorted((m / "shards" / "train").glob("00001.*"))
    (m / "shards" / "train" / "00001.images.npy").unlink()  # a tensor shard lost one of its files
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    again = {d["split"]: d for d in json.loads(out)["download"]}
    assert again["train"]["succeeded"] == 16 and again["train"]["failed"] == reasons
    asked = {p for p, _ in loopback_server.requests[served_before:]}
    first_rows = {f"/{r['uid']}.jpg" for r in train[:8] if r.get("url", "").startswith("http")}  # type: ignore[union-attr]
    asked_uids = {p.rsplit("/", 1)[-1] for p in asked}
    assert asked_uids == {p.rsplit("/", 1)[-1] for p in first_rows}
    tz = {t["split"]: t for t in json.loads(out)["tensorize"]}
    assert (
        tz["train"]["shards_done_before"] == tz["train"]["shards"] - 2
    )  # the re-fetched one and the damaged one
    assert sorted((m / "shards" / "train").glob("00001.*")) == tensor_files
    assert open_shards(m).index == index  # same bytes, same checksums


# ---------------------------------------------------------------------------------------------
# tensorize on hand-made img2dataset output


def write_wds_split(root: Path, split: str, shards: list[list[dict[str, object]]]) -> None:
    """img2dataset's webdataset layout: NNNNN.tar (+ .parquet row log, + _stats.json, last)."""
    folder = root / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    for sid, samples in enumerate(shards):
        name = f"{sid:05d}"
        with tarfile.open(folder / f"{name}.tar", "w") as tar:
            # img2dataset writes in completion order; tensorize must restore row order
            for k, s in reversed(list(enumerate(samples))):
                key = f"{sid:05d}{k:04d}"
                members = {
                    "json": json.dumps({"uid": s["uid"], "label": s["label"], "status": "success"}).encode()
                }
                if "image" in s:
                    members["jpg"] = s["image"]  # type: ignore[assignment]
                members["txt"] = str(s["caption"]).encode()
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        pl.DataFrame({"uid": [s["uid"] for s in samples], "status": ["success"] * len(samples)}).with_columns(
            pl.lit(None, dtype=pl.Utf8).alias("error_message")
        ).write_parquet(folder / f"{name}.parquet")
        (folder / f"{name}_stats.json").write_text("{}")


@pytest.fixture
def wds_manifest(tmp_path: Path) -> tuple[Path, dict[str, dict[str, object]]]:
    m = tmp_path / "toy"
    m.mkdir()
    rows, shards = [], []
    for sid in range(3):
        samples = []
        for k in range(5):
            i = sid * 5 + k
            s: dict[str, object] = {
                "uid": f"ü-{i:02d}",
                "label": i % 3,
                "caption": f"a {CLASSES[i % 3]}, nº {i}",
            }
            s["image"] = image_bytes(i % 3, i, size=(48 + 8 * (i % 2), 40))  # not square: crop path
            if i == 6:
                s["image"] = b"\x89PNG\r\n\x1a\n broken"
            samples.append(s)
            rows.append({**s, "url": f"http://example.invalid/{i}.jpg"})
        shards.append(samples)
    manifest_frame(rows, "train").write_parquet(m / "manifest.parquet")
    write_classes(m)
    write_wds_split(m, "train", shards)
    return m, {str(r["uid"]): r for r in rows}


def test_tensorize_writes_rows_in_order_skips_undecodable(wds_manifest) -> None:
    m, rows = wds_manifest
    rep = tensorize(m, split="train", resolution=24, workers=1)
    assert rep.num_samples == 14 and rep.skipped == {"undecodable": 1}
    from curate.loader import open_shards

    ds = open_shards(m)
    want = [u for u in rows if u != "ü-06"]
    assert ds.uids.tolist() == want
    assert ds.uids.dtype.kind == "U"
    np.testing.assert_array_equal(ds.labels, [rows[u]["label"] for u in want])
    images, tokens = ds.gather(np.arange(14))
    assert images.shape == (14, 3, 24, 24) and images.dtype == np.uint8
    assert tokens.dtype == np.int32 and tokens.shape == (14, 77)
    np.testing.assert_array_equal(tokens, tokenize([str(rows[u]["caption"]) for u in want]))
    assert [int(im.reshape(3, -1).mean(1).argmax()) for im in images] == [rows[u]["label"] for u in want]
    index = ds.index
    assert index["skipped"] == {"undecodable": 1}
    assert [s["num_samples"] for s in index["shards"]] == [5, 4, 5]
    assert index["wnids"] == ["n02123045", "n02099601", "n02119022"]
    for s in index["shards"]:
        for f in s["files"].values():
            # plain .npy: numpy reads it without pickle
            arr = np.load(m / "shards" / "train" / f["file"], allow_pickle=False)
            assert arr.dtype.str == f["dtype"] and list(arr.shape) == f["shape"]


def test_unlabelled_rows_round_trip_as_label_minus_one(tmp_path: Path) -> None:
    """Rows naming no class (curate build --keep-unmatched, label -1) reach the shards and the loader."""
    from curate.loader import open_shards
    from curate.manifest import UNLABELLED

    m = tmp_path / "open"
    m.mkdir()
    rows = [
        {"uid": f"r{i}", "label": UNLABELLED if i % 3 == 1 else i % 3, "caption": f"caption {i}", "image": image_bytes(i % 3, i)}
        for i in range(9)
    ]
    frame = manifest_frame([{**r, "label": max(int(r["label"]), 0), "url": f"http://example.invalid/{r['uid']}.jpg"} for r in rows], "train")
    frame = frame.with_columns(pl.Series("label", [r["label"] for r in rows], dtype=pl.Int32)).with_columns(
        pl.when(pl.col("label") < 0).then(None).otherwise(pl.col("class_name")).alias("class_name")
    )
    frame.write_parquet(m / "manifest.parquet")
    write_classes(m)
    (split,) = manifest_splits(m)  # what img2dataset is handed: every row, label -1 included
    assert split.rows["label"].to_list() == [r["label"] for r in rows]
    write_wds_split(m, "train", [rows[:5], rows[5:]])
    rep = tensorize(m, split="train", resolution=16, workers=1)
    assert rep.num_samples == 9 and rep.skipped == {}
    ds = open_shards(m)
    assert ds.uids.tolist() == [r["uid"] for r in rows] and ds.labels.tolist() == [r["label"] for r in rows]
    assert ds.num_classes == 3 and ds.labelled_rows.tolist() == [0, 2, 3, 5, 6, 8]
    _, tokens = ds.gather(np.arange(9))
    np.testing.assert_array_equal(tokens, tokenize([str(r["caption"]) for r in rows]))
    # a supervised reader takes the labelled rows only, each once an epoch, in a seeded order
    seen = [b.labels for b in ds.batches(4, seed=1, rows=ds.labelled_rows)]
    assert sorted(int(x) for b in seen for x in b) == [0, 0, 0, 2, 2, 2]
    assert [len(b) for b in ds.batches(4, seed=1)] == [4, 4, 1]  # and everyone else every row


def test_tensorize_is_deterministic_and_parallel_equals_serial(wds_manifest, tmp_path: Path) -> None:
    m, _ = wds_manifest
    tensorize(m, split="train", resolution=16, workers=1)
    one = (m / "shards" / "train" / "index.json").read_bytes()
    other = tmp_path / "copy"
    import shutil

    shutil.copytree(m / "images", other / "images")
    for f in ("manifest.parquet", "classes.parquet"):
        shutil.copy(m / f, other / f)
    tensorize(other, split="train", resolution=16, workers=2)
    assert (other / "shards" / "train" / "index.json").read_bytes() == one


def test_tensorize_resumes_per_shard(wds_manifest) -> None:
    from curate.loader import open_shards

    m, _ = wds_manifest
    out = m / "shards" / "train"
    tensorize(m, split="train", resolution=16, workers=1)
    full = (out / "index.json").read_bytes()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("0000[02].*")}
    # a run killed while writing shard 1: its arrays half there, its record not yet written
    (out / "00001.json").unlink()
    (out / "00001.tokens.npy").unlink()
    (out / "index.json").unlink()
    (out / ".00001.labels.npy.abc.tmp").write_bytes(b"partial")
    rep = tensorize(m, split="train", resolution=16, workers=1)
    assert rep.shards_done_before == 2 and rep.shards == 3
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("0000[02].*")} == before
    assert (out / "index.json").read_bytes() == full
    verify_shards(out)
    # another resolution cannot reuse anything, even when the last run died before its index
    (out / "index.json").unlink()
    rep = tensorize(m, split="train", resolution=12, workers=1)
    assert rep.shards_done_before == 0
    assert json.loads((out / "index.json").read_text())["resolution"] == 12
    assert open_shards(m).gather(np.arange(14))[0].shape == (14, 3, 12, 12)


@pytest.mark.slow  # the killed child imports open_clip (torch): seconds
def test_killed_tensorize_resumes_to_the_same_shards(tmp_path: Path) -> None:
    """SIGKILL a real `curate shards --skip-download` midway; the re-run ends where a clean run does."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    m = tmp_path / "many"
    m.mkdir()
    shards, rows = [], []
    for sid in range(40):
        samples = []
        for k in range(4):
            i = sid * 4 + k
            s: dict[str, object] = {
                "uid": f"k{i}",
                "label": i % 3,
                "caption": f"c {i}",
                "image": image_bytes(i % 3, i),
            }
            samples.append(s)
            rows.append({**s, "url": f"http://example.invalid/{i}"})
        shards.append(samples)
    manifest_frame(rows, "train").write_parquet(m / "manifest.parquet")
    write_classes(m)
    write_wds_split(m, "train", shards)
    clean = tmp_path / "clean"
    shutil.copytree(m, clean)
    tensorize(clean, split="train", resolution=16, workers=1)

    out = m / "shards" / "train"
    cmd = [sys.executable, "-m", "curate", "shards", str(m), "-r", "16", "-w", "1", "--skip-download"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(list(out.glob("*.json"))) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    records = list(out.glob("0*.json"))
    assert 0 < len(records) < 40 and not (out / "index.json").exists(), "the run was not caught midway"
    rep = tensorize(m, split="train", resolution=16, workers=1)
    assert rep.shards_done_before >= len(records) - 1 and rep.shards == 40
    assert (out / "index.json").read_bytes() == (clean / "shards" / "train" / "index.json").read_bytes()
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # no temporaries left behind


def test_verify_shards_catches_changed_file(wds_manifest) -> None:
    m, _ = wds_manifest
    tensorize(m, split="train", resolution=16, workers=1)
    f = m / "shards" / "train" / "00002.labels.npy"
    arr = np.load(f)
    arr[0] = (arr[0] + 1) % 3
    np.save(f, arr)
    with pytest.raises(CurateError, match="00002.labels.npy: sha256 differs"):
        verify_shards(m / "shards" / "train")


def test_classes_fall_back_to_manifest(wds_manifest) -> None:
    m, _ = wds_manifest
    (m / "classes.parquet").unlink()
    tensorize(m, split="train", resolution=16, workers=1)
    index = json.loads((m / "shards" / "train" / "index.json").read_text())
    assert index["num_classes"] == 3 and index["class_names"] == CLASSES


def test_labels_outside_class_table_are_skipped(wds_manifest) -> None:
    m, _ = wds_manifest
    pl.read_parquet(m / "classes.parquet").filter(pl.col("label") < 2).write_parquet(m / "classes.parquet")
    rep = tensorize(m, split="train", resolution=16, workers=1)
    assert rep.skipped["label_out_of_range"] == 5  # rows 2, 5, 8, 11, 14
    assert rep.num_samples == 9


# ---------------------------------------------------------------------------------------------
# bad input, through the CLI


def _manifest_with(tmp_path: Path, df: pl.DataFrame) -> Path:
    m = tmp_path / "bad"
    m.mkdir(exist_ok=True)
    df.write_parquet(m / "manifest.parquet")
    return m


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t / "nowhere", "no such manifest folder"),
        (lambda t: (t / "empty").mkdir() or t / "empty", "no manifest.parquet here"),
        (
            lambda t: _manifest_with(
                t, pl.DataFrame(schema={"uid": pl.Utf8, "label": pl.Int32, "caption": pl.Utf8, "url": pl.Utf8})
            ),
            "manifest.parquet: no training rows",
        ),
        (
            lambda t: _manifest_with(t, pl.DataFrame({"uid": ["a"], "url": ["http://x/a.jpg"]})),
            "manifest.parquet: missing column(s) label",
        ),
        (
            lambda t: _manifest_with(t, pl.DataFrame({"uid": ["a"], "label": [0], "url": ["http://x/a.jpg"]})),
            "manifest.parquet: no caption column",
        ),
        (
            lambda t: _manifest_with(t, pl.DataFrame({"uid": ["a"], "label": [0]})),
            "neither a url nor a path column",
        ),
        (
            lambda t: _manifest_with(
                t, pl.DataFrame({"uid": ["a", None], "label": [0, 1], "caption": "c", "url": ["u", "v"]})
            ),
            "column uid has 1 null value(s), first at row 1",
        ),
        (
            lambda t: _manifest_with(
                t, pl.DataFrame({"uid": ["a", "a"], "label": [0, 1], "caption": "c", "url": ["u", "v"]})
            ),
            "uid 'a' appears more than once",
        ),
        (
            lambda t: _manifest_with(t, pl.DataFrame({"uid": ["a"], "label": ["cat"], "caption": "c", "url": ["u"]})),
            "column label must be integers",
        ),
        (
            lambda t: _manifest_with(
                t, pl.DataFrame({"uid": ["a", "b", "c"], "label": [0, -1, -2], "caption": "c", "url": ["u", "v", "w"]})
            ),
            "row 2 has label -2; labels are 0..K-1, or -1 for no class",  # -1: unlabelled (--keep-unmatched)
        ),
    ],
)
def test_cli_rejects_bad_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    m = make(tmp_path)
    code, out, err = run_cli(["shards", str(m)], capsys)
    assert code == 2
    assert message in err and str(m) in err
    assert len(err.strip().splitlines()) == 1


def test_cli_rejects_corrupt_manifest_and_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = tmp_path / "corrupt"
    m.mkdir()
    (m / "manifest.parquet").write_bytes(b"PAR1 not really")
    code, _, err = run_cli(["shards", str(m)], capsys)
    assert code == 2 and "manifest.parquet: not a readable parquet file" in err
    good = _manifest_with(
        tmp_path, pl.DataFrame({"uid": ["a"], "label": [0], "caption": "c", "url": ["http://127.0.0.1:9/a.jpg"]})
    )
    for args, message in [
        (["--distributor", "dask"], "--distributor 'dask': choose one of multiprocessing, pyspark, ray"),
        (["--resolution", "4"], "--resolution 4: must be at least 8"),
        (["--processes", "-1"], "--processes -1: must be 0 or more"),
        (["--timeout", "0"], "--timeout 0: must be at least 1"),
        *[
            (["--distributor", name], f"--distributor {name}: {name} is not installed; pip install {name}")
            for name in ("pyspark", "ray")
            if importlib.util.find_spec(name) is None
        ],
    ]:
        code, _, err = run_cli(["shards", str(good), *args], capsys)
        assert code == 2 and message in err, (args, err)
    code, _, err = run_cli(["shards", str(good), "--skip-download"], capsys)
    assert code == 2 and "no downloaded images for split 'train'" in err


def test_failure_reasons_group_rows() -> None:
    a = failure_reason(
        "failed_to_download", "<urlopen error [Errno 2] No such file or directory: '/data/a.jpg'>"
    )
    b = failure_reason(
        "failed_to_download", "<urlopen error [Errno 2] No such file or directory: '/data/b.jpg'>"
    )
    assert a == b == "failed_to_download: <urlopen error [Errno 2] No such file or directory>"
    assert failure_reason("failed_to_resize", None) == "failed_to_resize: unknown error"
    cut = [
        failure_reason("failed_to_download", f"IncompleteRead({n} bytes read, {9000 - n} more expected)")
        for n in (1, 77)
    ]
    assert cut[0] == cut[1] == "failed_to_download: IncompleteRead (connection closed before the body ended)"


def test_local_paths_become_file_urls(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    (m / "img").mkdir()
    df = pl.DataFrame(
        {
            "uid": ["a", "b", "c", "d"],
            "label": [0, 1, 0, 1],
            "url": ["https://x.org/a.jpg", None, None, "img/d.jpg"],
            "path": [None, "img/b.jpg", None, None],
            "caption": "a photo",
            "split": ["train", "train", "train", "eval"],
        }
    )
    df.write_parquet(m / "manifest.parquet")
    parts = {p.split: p for p in manifest_splits(m)}
    urls = parts["train"].rows["url"].to_list()
    assert urls == ["https://x.org/a.jpg", (m / "img" / "b.jpg").resolve().as_uri(), None]
    # no eval.parquet: the manifest's own eval rows form the eval split
    assert parts["eval"].rows["url"].to_list() == [(m / "img" / "d.jpg").resolve().as_uri()]


def test_truncated_tar_accounts_for_every_downloaded_sample(tmp_path: Path) -> None:
    """A tar cut in half: the samples before the cut are kept, every other success of img2dataset's
    row log is counted under one reason, and nothing is reported as a decode error."""
    m = tmp_path / "cut"
    m.mkdir()
    samples = [
        {"uid": f"c{i:02d}", "label": i % 3, "caption": f"c {i}", "image": image_bytes(i % 3, i)} for i in range(16)
    ]
    manifest_frame([{**s, "url": f"http://example.invalid/{i}"} for i, s in enumerate(samples)], "train").write_parquet(
        m / "manifest.parquet"
    )
    write_classes(m)
    write_wds_split(m, "train", [samples])
    tar = m / "images" / "train" / "00000.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    rep = tensorize(m, split="train", resolution=16, workers=1)
    assert rep.num_samples + sum(rep.skipped.values()) == 16, rep
    assert rep.num_samples > 0
    assert set(rep.skipped) == {"tar_truncated"}, rep.skipped
    from curate.loader import open_shards

    kept = open_shards(m).uids.tolist()
    assert kept == sorted(kept) and set(kept) <= {s["uid"] for s in samples}  # row order, none invented


@pytest.mark.slow  # two real img2dataset runs (a subprocess each): seconds to start
def test_killed_download_leaves_nothing_running_and_reruns(tmp_path: Path) -> None:
    """SIGKILL `curate shards` while img2dataset's workers wait on the network: every process it
    started dies with it, and the immediate rerun downloads everything."""
    import http.server
    import os
    import subprocess
    import sys
    import threading
    import time

    import psutil

    release = threading.Event()
    hits: list[str] = []

    class Slow(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            hits.append(self.path)
            release.wait(60)  # hold every request until the test lets go
            i = int(self.path.strip("/").split(".")[0])
            body = image_bytes(i % 3, i)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        port = httpd.server_address[1]
        m = tmp_path / "slow"
        m.mkdir()
        rows = [{"uid": f"s{i}", "label": i % 3, "caption": f"c {i}", "url": f"http://127.0.0.1:{port}/{i}.jpg"} for i in range(6)]
        manifest_frame(rows, "train").write_parquet(m / "manifest.parquet")
        write_classes(m)
        cmd = [sys.executable, "-m", "curate", "shards", str(m), "-r", "16", "-p", "1", "-t", "2", "--timeout", "60"]
        env = {**os.environ, "CURATE_NO_PROGRESS": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 120
        while not hits and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hits, "img2dataset never asked for an image"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children
        proc.kill()
        proc.wait()
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"still running after the kill: {[p.pid for p in alive]}"
        release.set()
        code = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=300)
        assert code.returncode == 0, code.stderr.decode()[-2000:]
        report = json.loads((m / "images" / "train.report.json").read_text())
        assert report["succeeded"] == 6, report
        assert json.loads((m / "shards" / "train" / "index.json").read_text())["num_samples"] == 6
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.slow
def test_the_ray_distributor_downloads_through_img2dataset_on_a_local_ray(
    loopback_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--distributor ray`` hands the download to img2dataset's own Ray distributor (on a local Ray
    that img2dataset's child starts): every served image arrives, the dead link is counted, and the
    tensor shards hold what was served (multiprocessing: test_shards_end_to_end_over_http)."""
    pytest.importorskip("ray")
    from curate.loader import open_shards

    rows = []
    for i in range(10):
        uid, label = f"r-{i:02d}", i % 3
        if i != 6:  # one dead link
            (loopback_server.root / f"{uid}.jpg").write_bytes(image_bytes(label, i))
        rows.append({"uid": uid, "label": label, "caption": f"a {CLASSES[label]} {i}", "url": loopback_server.url(f"{uid}.jpg")})
    m = tmp_path / "m"
    m.mkdir()
    manifest_frame(rows, "train").write_parquet(m / "manifest.parquet")
    write_classes(m)
    args = ["shards", str(m), "--resolution", "32", "-p", "1", "-t", "2", "--shard-size", "4", "-w", "1", "--json", "--distributor", "ray"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    log = (m / "images" / "img2dataset.log").read_text(encoding="utf-8")
    assert "Started a local Ray instance" in log  # img2dataset's Ray distributor ran the shards
    (report,) = json.loads(out)["download"]
    assert report["succeeded"] == 9 and report["failed"] == {"failed_to_download: HTTP Error 404: Not Found": 1}
    ds = open_shards(m, "train")
    want = {r["uid"]: r["label"] for i, r in enumerate(rows) if i != 6}
    assert sorted(ds.uids.tolist()) == sorted(want)
    images, _ = ds.gather(np.arange(len(ds)))
    for i, uid in enumerate(ds.uids.tolist()):
        assert ds.labels[i] == want[uid]
        assert int(images[i].reshape(3, -1).mean(axis=1).argmax()) == want[uid]  # the image served for it


def test_the_tokenizer_tokenizes_as_open_clips_own() -> None:
    # curate.shards reads open_clip's tokenizer.py without importing the package (seconds of model
    # imports); it must give open_clip.get_tokenizer's ids, token for token
    import torch

    import curate.shards as shards

    standalone = shards._standalone_tokenizer()
    assert standalone is not None  # this open_clip's tokenizer file still loads alone
    captions = [
        "a photo of a dog", "A Tiger Shark &amp; two <b>geese</b>", "Ünïcödé, émojis 🐶 and 中文", "", "   ",
        " ".join(f"word{i}" for i in range(200)),  # truncated to 77 with the end token kept
        "it's   ALL-CAPS!!! don't", "2019-05-01 12:30 #tags @people http://example.com/x.jpg",
    ]
    assert torch.equal(standalone(captions), shards._package_tokenizer()(captions))
