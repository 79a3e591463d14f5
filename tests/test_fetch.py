"""Metadata download against a real HTTP server on 127.0.0.1: resume, retries, checksums, dead URLs."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from cli_helpers import run_cli

from curate import fetch as fetch_mod
from curate.errors import CurateError
from curate.fetch import FETCH_PRESETS, FetchPreset, Part, download, parse_parts


def serve_blob(server, name: str, size: int = 50_000, seed: int = 0) -> tuple[bytes, str]:
    data = random.Random(seed).randbytes(size)
    (server.root / name).write_bytes(data)
    return data, hashlib.sha256(data).hexdigest()


def test_download_whole_file(loopback_server, tmp_path: Path) -> None:
    data, digest = serve_blob(loopback_server, "meta.parquet")
    dest = download(loopback_server.url("meta.parquet"), tmp_path / "meta.parquet", sha256=digest)
    assert dest.read_bytes() == data
    assert not (tmp_path / "meta.parquet.part").exists()
    # already there and verified: nothing is requested again
    before = len(loopback_server.requests)
    download(loopback_server.url("meta.parquet"), tmp_path / "meta.parquet", sha256=digest)
    assert len(loopback_server.requests) == before


def test_cli_fetch_resumes_an_interrupted_transfer(loopback_server, tmp_path: Path, capsys) -> None:
    data, digest = serve_blob(loopback_server, "part-00000.parquet", size=200_000)
    url = loopback_server.url("part-00000.parquet")
    out = tmp_path / "out"
    loopback_server.drop_after("part-00000.parquet", 70_000)

    # first run: the server hangs up after 70,000 bytes and no retry is allowed
    code, _, err = run_cli(["fetch", url, "--out", str(out), "--retries", "0"], capsys)
    assert code == 2
    assert f"cannot download {url}" in err and "run again to resume" in err
    assert not (out / "part-00000.parquet").exists()  # never a half file under the final name
    kept = (out / "part-00000.parquet.part").stat().st_size
    assert 0 < kept <= 70_000

    # second run: continues with a Range request and ends with the exact bytes
    code, stdout, err = run_cli(["fetch", url, "--out", str(out), "--retries", "0"], capsys)
    assert code == 0, err
    assert loopback_server.range_requests("part-00000.parquet") == [f"bytes={kept}-"]
    final = out / "part-00000.parquet"
    assert stdout.strip() == str(final)
    assert hashlib.sha256(final.read_bytes()).hexdigest() == digest
    assert not (out / "part-00000.parquet.part").exists()


def test_retry_within_one_run_resumes(loopback_server, tmp_path: Path) -> None:
    data, digest = serve_blob(loopback_server, "cc12m.tsv", size=300_000, seed=3)
    loopback_server.drop_after("cc12m.tsv", 150_000)
    dest = download(loopback_server.url("cc12m.tsv"), tmp_path / "cc12m.tsv", sha256=digest, retries=2, backoff=0)
    assert dest.read_bytes() == data
    ranges = loopback_server.range_requests("cc12m.tsv")
    assert len(ranges) == 1 and ranges[0].startswith("bytes=") and ranges[0] != "bytes=0-"


def test_complete_part_file_is_finished_without_refetching(loopback_server, tmp_path: Path) -> None:
    # a run killed between the last byte and the rename: the server answers 416 to the Range
    data, digest = serve_blob(loopback_server, "done.tsv", size=5_000)
    (tmp_path / "done.tsv.part").write_bytes(data)
    dest = download(loopback_server.url("done.tsv"), tmp_path / "done.tsv", sha256=digest, retries=0)
    assert dest.read_bytes() == data
    assert loopback_server.range_requests("done.tsv") == ["bytes=5000-"]


def test_checksum_mismatch_is_an_error_and_leaves_nothing(loopback_server, tmp_path: Path, capsys, monkeypatch) -> None:
    data, digest = serve_blob(loopback_server, "a.parquet", size=10_000)
    wrong = "0" * 64
    with pytest.raises(CurateError, match=f"checksum mismatch for a.parquet .*expected sha256 {wrong}, got {digest}"):
        download(loopback_server.url("a.parquet"), tmp_path / "a.parquet", sha256=wrong)
    assert not (tmp_path / "a.parquet").exists() and not (tmp_path / "a.parquet.part").exists()

    # the same through a preset's registry entry and the CLI (right checksum on part 0, wrong on 1)
    serve_blob(loopback_server, "b.parquet", size=9_000, seed=9)
    preset = FetchPreset(
        "loopback",
        "two parts served on 127.0.0.1",
        (Part(loopback_server.url("a.parquet"), "a.parquet", digest), Part(loopback_server.url("b.parquet"), "b.parquet", wrong)),
        "generic",
    )
    monkeypatch.setitem(FETCH_PRESETS, "loopback", preset)
    code, out, err = run_cli(["fetch", "loopback", "--out", str(tmp_path / "p"), "--parts", "0"], capsys)
    assert code == 0, err
    assert (tmp_path / "p" / "a.parquet").read_bytes() == data
    code, out, err = run_cli(["fetch", "loopback", "--out", str(tmp_path / "p"), "--parts", "b.parquet"], capsys)
    assert code == 2 and "checksum mismatch for b.parquet" in err
    assert not (tmp_path / "p" / "b.parquet").exists()


def test_dead_url_names_url_and_status(loopback_server, tmp_path: Path, capsys) -> None:
    url = loopback_server.url("missing.tsv")
    code, _, err = run_cli(["fetch", url, "--out", str(tmp_path)], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == f"error: cannot download {url}: HTTP 404 Not Found"
    assert len(loopback_server.requests) == 1  # a 404 is not retried

    serve_blob(loopback_server, "busy.tsv")
    loopback_server.fail("busy.tsv", 503)
    busy = loopback_server.url("busy.tsv")
    code, _, err = run_cli(["fetch", busy, "--out", str(tmp_path), "--retries", "2", "--backoff", "0"], capsys)
    assert code == 2
    assert f"cannot download {busy}: HTTP 503 Service Unavailable (gave up after 3 attempts" in err
    assert [p for p, _ in loopback_server.requests].count("/busy.tsv") == 3


def test_connection_refused_is_a_clear_error(tmp_path: Path, capsys) -> None:
    import socket

    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.parquet"
    code, _, err = run_cli(["fetch", url, "--out", str(tmp_path), "--retries", "0"], capsys)
    assert code == 2 and f"cannot download {url}: ConnectionError" in err


def test_unknown_preset_and_bad_parts(capsys) -> None:
    code, _, err = run_cli(["fetch", "laion9b"], capsys)
    assert code == 2 and "unknown fetch preset 'laion9b'; known presets: cc12m, cc3m, datacomp-small, imagenet-captions, laion2b-en" in err
    code, _, err = run_cli(["fetch", "cc12m", "--parts", "3"], capsys)
    assert code == 2 and "--parts: '3' is out of range; this preset has parts 0-0" in err


def test_parse_parts() -> None:
    parts = [Part(f"http://h/{i}", f"f{i}.parquet") for i in range(10)]
    assert [p.filename for p in parse_parts("0-2,5,f9.parquet,1", parts)] == ["f0.parquet", "f1.parquet", "f2.parquet", "f5.parquet", "f9.parquet"]
    assert parse_parts(None, parts) == parts and parse_parts("all", parts) == parts
    with pytest.raises(CurateError, match="neither a part index"):
        parse_parts("x", parts)


def test_presets_have_real_locations() -> None:
    assert FETCH_PRESETS["relaion400m"].hub.repo_id == "laion/relaion400m"
    for preset in FETCH_PRESETS.values():
        assert bool(preset.parts) + (preset.hub is not None) + (preset.withdrawn is not None) == 1, preset.name
        assert preset.source_preset in __import__("curate.sources", fromlist=["PRESETS"]).PRESETS
        for p in preset.parts:
            assert p.url.startswith("https://") and p.url.endswith(p.filename)


def test_default_out_is_in_the_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path))
    assert fetch_mod.default_out("cc3m") == tmp_path / "metadata" / "cc3m"


def test_a_second_concurrent_download_of_one_file_is_refused(loopback_server, tmp_path: Path) -> None:
    import fcntl

    serve_blob(loopback_server, "x.tsv", size=1_000)
    with open(tmp_path / ".x.tsv.lock", "w") as held:  # what a running download holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CurateError, match="x.tsv: another download of this file is running"):
            download(loopback_server.url("x.tsv"), tmp_path / "x.tsv")
    assert loopback_server.requests == []
    assert download(loopback_server.url("x.tsv"), tmp_path / "x.tsv").stat().st_size == 1_000
    assert not (tmp_path / ".x.tsv.lock").exists()


def _hub_repo(server, repo: str, files: dict[str, bytes]) -> None:
    """A dataset repository laid out as the Hub serves it: the tree listing as JSON at
    api/datasets/REPO/tree/main (the query is ignored), the files at datasets/REPO/resolve/main/PATH."""
    import json

    tree = []
    for path, data in files.items():
        dest = server.root / "datasets" / repo / "resolve" / "main" / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        entry = {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
        if path.endswith(".parquet"):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        tree.append(entry)
    tree.append({"type": "directory", "path": "data", "size": 0, "oid": "0" * 40})
    listing = server.root / "api" / "datasets" / repo / "tree" / "main"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps(tree))


def test_hub_preset_lists_downloads_resumes_and_verifies(loopback_server, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", loopback_server.base_url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    files = {f"data/part-{i:05d}.parquet": random.Random(i).randbytes(200_000 + i) for i in range(3)}
    files["README.md"] = b"# card"
    _hub_repo(loopback_server, "laion/relaion400m", files)
    out = tmp_path / "out"
    loopback_server.drop_after("datasets/laion/relaion400m/resolve/main/data/part-00001.parquet", 100_000)
    code, _, err = run_cli(["fetch", "relaion400m", "--out", str(out), "--parts", "0-1", "--retries", "0"], capsys)
    assert code == 2 and "run again to resume" in err
    assert (out / "part-00000.parquet").read_bytes() == files["data/part-00000.parquet"]
    code, stdout, err = run_cli(["fetch", "relaion400m", "--out", str(out), "--parts", "0-1", "--retries", "0"], capsys)
    assert code == 0, err
    assert stdout.split() == [str(out / "part-00000.parquet"), str(out / "part-00001.parquet")]
    assert (out / "part-00001.parquet").read_bytes() == files["data/part-00001.parquet"]
    assert loopback_server.range_requests("datasets/laion/relaion400m/resolve/main/data/part-00001.parquet")[-1].startswith("bytes=")
    assert not (out / "README.md").exists()  # only the preset's pattern (*.parquet)


def test_hub_checksum_from_the_listing_is_enforced(loopback_server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", loopback_server.base_url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no saved login token either
    _hub_repo(loopback_server, "mlfoundations/datacomp_small", {"a.parquet": b"x" * 5000})
    (loopback_server.root / "datasets/mlfoundations/datacomp_small/resolve/main/a.parquet").write_bytes(b"y" * 5000)
    with pytest.raises(CurateError, match="checksum mismatch for a.parquet"):
        fetch_mod.fetch("datacomp-small", tmp_path / "out", retries=0)
    assert not (tmp_path / "out" / "a.parquet").exists()


def test_gated_or_missing_hub_repo_names_the_page_and_the_token(loopback_server, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", loopback_server.base_url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    loopback_server.fail("api/datasets/laion/relaion2B-en-research-safe/tree/main", 401)
    code, _, err = run_cli(["fetch", "relaion2b-en-research-safe", "--out", str(tmp_path)], capsys)
    assert code == 2
    assert "https://huggingface.co/datasets/laion/relaion2B-en-research-safe" in err and "HF_TOKEN" in err
    assert "without a token" in err


def test_withdrawn_presets_point_to_the_rerelease(capsys) -> None:
    code, _, err = run_cli(["fetch", "laion400m"], capsys)
    assert code == 2 and "withdrew" in err and "curate fetch relaion400m" in err and "--preset laion400m" in err
