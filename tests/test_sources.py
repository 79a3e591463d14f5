"""Caption sources: every format and preset layout, uid stability, and bad input through the CLI.

All inputs are written by the tests into tmp_path (one img2dataset run makes a real output folder).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import polars as pl
import pytest
from cli_helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.errors import CurateError
from curate.sources import CANONICAL, PRESETS, open_source, validate_source


def canonical_ok(df: pl.DataFrame) -> None:
    assert df.columns[: len(CANONICAL)] == list(CANONICAL)
    for c in CANONICAL:
        assert df.schema[c] == pl.Utf8, c


# ------------------------------------------------------------------------------------------------
# fixtures of every preset layout


def write_laion(path: Path) -> None:
    pl.DataFrame(
        {
            "SAMPLE_ID": [1001, 1002, 1003],
            "URL": ["http://img/1.jpg", "http://img/2.jpg", "http://img/3.jpg"],
            "TEXT": ["A tench in a net", "golden retriever puppy", "Crane lifting steel"],
            "HEIGHT": [256, 320, 480],
            "WIDTH": [256, 240, 640],
            "LICENSE": ["?", "?", "cc-by"],
            "NSFW": ["UNLIKELY", "UNLIKELY", "UNLIKELY"],
            "similarity": [0.31, 0.35, 0.29],
        }
    ).write_parquet(path)


def test_laion_layout_is_detected_and_extras_pass_through(tmp_path: Path) -> None:
    write_laion(tmp_path / "part-00000.parquet")
    src = open_source(str(tmp_path / "part-00000.parquet"))
    assert isinstance(src.lazy, pl.LazyFrame)
    assert (src.preset, src.vocab) == ("laion400m", "imagenet1k")
    df = src.collect()
    canonical_ok(df)
    assert df["uid"].to_list() == ["1001", "1002", "1003"]
    assert df["caption"].to_list() == ["A tench in a net", "golden retriever puppy", "Crane lifting steel"]
    assert df["url"][1] == "http://img/2.jpg"
    assert df["path"].null_count() == 3
    # extra columns keep their types; columns copied into canonical ones are not repeated
    assert df.columns[len(CANONICAL) :] == ["SAMPLE_ID", "HEIGHT", "WIDTH", "LICENSE", "NSFW", "similarity"]
    assert df.schema["similarity"] == pl.Float64 and df["HEIGHT"].to_list() == [256, 320, 480]


def test_cc3m_tsv_without_and_with_header(tmp_path: Path) -> None:
    # CC3M: caption<TAB>url, no header; captions may hold bare quotes
    (tmp_path / "GCC-training.tsv").write_text(
        'a "tench" on a dock\thttp://img/a.jpg\nbrown dog, running\thttp://img/b.jpg\n', encoding="utf-8"
    )
    df = open_source(str(tmp_path / "GCC-training.tsv"), preset="cc3m").collect()
    canonical_ok(df)
    assert df["caption"].to_list() == ['a "tench" on a dock', "brown dog, running"]
    assert df["url"].to_list() == ["http://img/a.jpg", "http://img/b.jpg"]
    assert df["uid"].to_list() == ["GCC-training.tsv:0", "GCC-training.tsv:1"]

    (tmp_path / "with_header.tsv").write_text("caption\turl\nsnowy owl\thttp://img/c.jpg\n", encoding="utf-8")
    df = open_source(str(tmp_path / "with_header.tsv"), preset="cc3m").collect()
    assert df.select("caption", "url").row(0) == ("snowy owl", "http://img/c.jpg")


def test_cc12m_tsv_url_first(tmp_path: Path) -> None:
    (tmp_path / "cc12m.tsv").write_text(
        "https://img/1.jpg\tperson holding a <PERSON> tench\nhttps://img/2.jpg\ta red fox\n", encoding="utf-8"
    )
    src = open_source(str(tmp_path / "cc12m.tsv"), preset="cc12m")
    assert src.preset == "cc12m"
    df = src.collect()
    assert df["url"].to_list() == ["https://img/1.jpg", "https://img/2.jpg"]
    assert df["caption"].to_list() == ["person holding a <PERSON> tench", "a red fox"]


def test_yfcc15m_jsonl_composes_and_decodes(tmp_path: Path) -> None:
    rows = [
        {"photoid": 6985418911, "title": "Golden+retriever", "description": "at+the%20beach", "usertags": "dog,beach",
         "downloadurl": "http://farm8.staticflickr.com/1.jpg", "licensename": "CC BY"},
        {"photoid": 12, "title": "Tench", "description": None, "usertags": "fish",
         "downloadurl": "http://farm8.staticflickr.com/2.jpg", "licensename": "CC BY"},
    ]
    (tmp_path / "yfcc15m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    src = open_source(str(tmp_path / "yfcc15m.jsonl"))  # recognised from photoid/title/description
    assert src.preset == "yfcc15m"
    df = src.collect()
    canonical_ok(df)
    assert df["uid"].to_list() == ["6985418911", "12"]
    assert df["caption"].to_list() == ["Golden retriever at the beach", "Tench"]
    assert df["title"][0] == "Golden retriever" and df["description"][0] == "at the beach"
    assert df["tags"].to_list() == ["dog,beach", "fish"]
    assert df["url"][1] == "http://farm8.staticflickr.com/2.jpg"
    assert "licensename" in df.columns and "photoid" in df.columns


def test_imagenet_captions_json_records(tmp_path: Path) -> None:
    records = [
        {"filename": "n01440764_10026.JPEG", "wnid": "n01440764", "title": "Big catch",
         "tags": ["tench", "fishing"], "description": "my first tench"},
        {"filename": "n02099601_7.JPEG", "wnid": "n02099601", "title": "", "tags": [],
         "description": "our golden retriever"},
    ]
    (tmp_path / "imagenet_captions.json").write_text(json.dumps(records), encoding="utf-8")
    src = open_source(str(tmp_path / "imagenet_captions.json"), preset="imagenet-captions")
    df = src.collect()
    canonical_ok(df)
    assert df["uid"].to_list() == ["n01440764_10026.JPEG", "n02099601_7.JPEG"]
    assert df["caption"].to_list() == ["Big catch tench, fishing my first tench", "our golden retriever"]
    assert df["wnid"].to_list() == ["n01440764", "n02099601"]
    assert df["tags"][0] == "tench, fishing"
    # without --preset the layout is recognised from filename/wnid/title
    assert open_source(str(tmp_path / "imagenet_captions.json")).preset == "imagenet-captions"


def test_generic_csv_with_column_overrides(tmp_path: Path) -> None:
    (tmp_path / "alt.csv").write_text(
        'img,alt_words,ident,score\nhttp://i/1.png,"a tabby cat, sleeping",A-1,0.5\nhttp://i/2.png,a tench,A-2,0.7\n',
        encoding="utf-8",
    )
    with pytest.raises(CurateError, match=r"alt.csv: no caption column .*img, alt_words, ident, score"):
        open_source(str(tmp_path / "alt.csv"))
    src = open_source(str(tmp_path / "alt.csv"), caption_col="alt_words", url_col="img", uid_col="ident")
    df = src.collect()
    canonical_ok(df)
    assert df.select("uid", "caption", "url").rows() == [
        ("A-1", "a tabby cat, sleeping", "http://i/1.png"),
        ("A-2", "a tench", "http://i/2.png"),
    ]
    assert df.columns[len(CANONICAL) :] == ["ident", "score"]
    # a row without its own id falls back to FILE:ROW instead of a null uid
    (tmp_path / "ids.csv").write_text("caption,key\na fox,k0\na hen,\n", encoding="utf-8")
    assert open_source(str(tmp_path / "ids.csv")).collect()["uid"].to_list() == ["k0", "ids.csv:1"]


def test_generic_jsonl_and_parquet_formats(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text('{"caption": "a fox", "url": "u1"}\n{"caption": "a hen", "url": "u2"}\n')
    pl.DataFrame({"text": ["a fox", "a hen"], "url": ["u1", "u2"]}).write_parquet(tmp_path / "c.parquet")
    a = open_source(str(tmp_path / "c.jsonl")).collect()
    b = open_source(str(tmp_path / "c.parquet")).collect()
    assert a.select("caption", "url").equals(b.select("caption", "url"))
    assert a["uid"].to_list() == ["c.jsonl:0", "c.jsonl:1"]
    assert b["uid"].to_list() == ["c.parquet:0", "c.parquet:1"]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_tar(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        _add(tar, "s0.jpg", b"\xff\xd8jpeg")
        _add(tar, "s0.txt", b"a tench ")
        _add(tar, "s0.json", json.dumps({"url": "http://i/0.jpg", "key": "s0"}).encode())
        _add(tar, "s1.jpg", b"\xff\xd8jpeg")
        _add(tar, "s1.json", json.dumps({"url": "http://i/1.jpg", "caption": "a café — ok"}).encode())
    src = open_source(str(tmp_path / "shard-000.tar"))
    df = src.collect()
    canonical_ok(df)
    assert df.select("uid", "caption", "url").rows() == [
        ("s0", "a tench", "http://i/0.jpg"),
        ("s1", "a café — ok", "http://i/1.jpg"),
    ]
    assert df["path"][0].endswith("shard-000.tar#s0.jpg")
    # the tar is read when the plan runs, and a projection/limit is honoured
    assert src.lazy.select("uid").head(1).collect()["uid"].to_list() == ["s0"]


@pytest.mark.slow  # img2dataset spawns worker processes: ~10-20 s on two cores
def test_img2dataset_output_folder(tmp_path: Path) -> None:
    """A real img2dataset run over file:// URLs; the folder's parquet files are the source."""
    from PIL import Image

    rows = []
    for i in range(3):
        Image.new("RGB", (16, 16), (80 * i, 10, 10)).save(tmp_path / f"im{i}.png")
        rows.append({"url": (tmp_path / f"im{i}.png").as_uri(), "caption": f"a red square number {i}"})
    pl.DataFrame(rows).write_parquet(tmp_path / "in.parquet")
    script = textwrap.dedent(
        f"""
        from img2dataset import download
        if __name__ == "__main__":
            download(url_list={str(tmp_path / 'in.parquet')!r}, input_format="parquet", url_col="url",
                     caption_col="caption", output_folder={str(tmp_path / 'out')!r},
                     output_format="webdataset", image_size=8, processes_count=1, thread_count=2,
                     enable_wandb=False)
        """
    )
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, timeout=120)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.parquet", "00000.tar", "00000_stats.json"]
    df = open_source(str(tmp_path / "out")).collect().sort("uid")
    canonical_ok(df)
    assert df["uid"].to_list() == ["000000000", "000000001", "000000002"]
    assert df["caption"].to_list() == [f"a red square number {i}" for i in range(3)]
    assert df["status"].to_list() == ["success"] * 3  # img2dataset's own columns pass through
    # the tar alone is a webdataset source with the same keys and captions
    tar_df = open_source(str(tmp_path / "out" / "00000.tar")).collect().sort("uid")
    assert tar_df.select("uid", "caption").equals(df.select("uid", "caption"))


def test_folder_and_glob_uids_are_relative_and_stable(tmp_path: Path) -> None:
    root = tmp_path / "meta"
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
        (root / sub / "part.csv").write_text(f"caption,url\n{sub} one,u1\n{sub} two,u2\n")
    by_folder = open_source(str(root)).collect()
    assert by_folder["uid"].to_list() == ["a/part.csv:0", "a/part.csv:1", "b/part.csv:0", "b/part.csv:1"]
    by_glob = open_source(str(root / "*" / "part.csv")).collect()
    assert by_glob.equals(by_folder)
    # moved elsewhere (another machine, another checkout): the same uids
    moved = tmp_path / "elsewhere" / "meta"
    shutil.copytree(root, moved)
    assert open_source(str(moved)).collect().equals(by_folder)
    assert open_source(str(root)).collect().equals(by_folder)  # and the same on a second run


def test_compressed_files_and_zips(tmp_path: Path, monkeypatch) -> None:
    import bz2
    import gzip
    import zipfile

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    tsv = "http://i/1.jpg\ta tench\nhttp://i/2.jpg\ta goldfish\n"
    (tmp_path / "cc12m.tsv.gz").write_bytes(gzip.compress(tsv.encode()))
    (tmp_path / "cc12m.tsv.bz2").write_bytes(bz2.compress(tsv.encode()))
    plain = tmp_path / "plain" / "cc12m.tsv"
    plain.parent.mkdir()
    plain.write_text(tsv)
    expected = open_source(str(plain), preset="cc12m").collect()
    for name in ("cc12m.tsv.gz", "cc12m.tsv.bz2"):
        df = open_source(str(tmp_path / name), preset="cc12m").collect()
        assert df.drop("uid").equals(expected.drop("uid"))
        assert df["uid"].to_list() == [f"{name}:0", f"{name}:1"]  # named for the file given, not the cache
    records = [{"filename": "n01443537_1.JPEG", "wnid": "n01443537", "title": "goldfish", "tags": [], "description": ""}]
    with zipfile.ZipFile(tmp_path / "imagenet_captions.zip", "w") as zf:
        zf.writestr("imagenet_captions.json", json.dumps(records))
    src = open_source(str(tmp_path / "imagenet_captions.zip"))
    assert src.preset == "imagenet-captions"
    assert src.collect().select("uid", "caption", "wnid").rows() == [("n01443537_1.JPEG", "goldfish", "n01443537")]


def test_folder_with_mixed_formats_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("caption\nx\n")
    (tmp_path / "b.jsonl").write_text('{"caption": "y"}\n')
    with pytest.raises(CurateError, match="several formats"):
        open_source(str(tmp_path))


def test_http_source_through_loopback(loopback_server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))  # downloaded sources land there
    write_laion(loopback_server.root / "part-00007.parquet")
    url = loopback_server.url("part-00007.parquet")
    df = open_source(url).collect()
    canonical_ok(df)
    assert df["uid"].to_list() == ["1001", "1002", "1003"]
    (loopback_server.root / "caps.tsv").write_text("a tench\thttp://x/1\n")
    assert open_source(loopback_server.url("caps.tsv")).collect()["uid"].to_list() == ["caps.tsv:0"]
    assert len(list((tmp_path / "cache" / "sources").rglob("*.parquet"))) == 1


def test_streaming_engine_and_lazy_projection(tmp_path: Path) -> None:
    pl.DataFrame({"caption": [f"cap {i}" for i in range(5000)], "url": ["u"] * 5000}).write_parquet(tmp_path / "big.parquet")
    src = open_source(str(tmp_path / "big.parquet"))
    streamed = src.lazy.filter(pl.col("caption").str.ends_with("99")).collect(engine="streaming")
    assert streamed["uid"].to_list() == [f"big.parquet:{i}" for i in range(5000) if str(i).endswith("99")]


def test_presets_registry_lists_the_known_layouts() -> None:
    assert {"laion400m", "cc3m", "cc12m", "yfcc15m", "imagenet-captions", "generic"} <= set(PRESETS)


# ------------------------------------------------------------------------------------------------
# bad input, through the CLI: exit code 2 and one line naming the file / column / row


def test_cli_head_prints_canonical_rows(tmp_path: Path, capsys) -> None:
    write_laion(tmp_path / "laion.parquet")
    code, out, err = run_cli(["head", str(tmp_path / "laion.parquet"), "-n", "2"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split("\t") == list(CANONICAL)
    assert lines[1].split("\t")[:3] == ["1001", "A tench in a net", "http://img/1.jpg"]
    assert len(lines) == 3
    assert "laion400m" in err


@pytest.mark.parametrize(
    ("make", "args", "expected"),
    [
        (None, ["head", "{d}/nope.parquet"], r"nope.parquet: no such file"),
        (lambda d: (d / "empty.csv").write_bytes(b""), ["head", "{d}/empty.csv"], r"empty.csv: the file is empty"),
        (lambda d: (d / "empty.parquet").write_bytes(b""), ["head", "{d}/empty.parquet"], r"empty.parquet: the file is empty"),
        (lambda d: (d / "blank.jsonl").write_text("\n \n"), ["head", "{d}/blank.jsonl"], r"blank.jsonl: the file is empty"),
        (
            lambda d: (d / "header.csv").write_text("caption,url\n"),
            ["head", "{d}/header.csv"],
            r"header.csv: has a header \(caption, url\) but no rows",
        ),
        (
            lambda d: pl.DataFrame({"caption": [], "url": []}, schema={"caption": pl.Utf8, "url": pl.Utf8}).write_parquet(d / "norows.parquet"),
            ["head", "{d}/norows.parquet"],
            r"norows.parquet: the parquet file has no rows",
        ),
        (
            lambda d: (d / "nocap.csv").write_text("url,width\nhttp://x,3\n"),
            ["head", "{d}/nocap.csv"],
            r"nocap.csv: no caption column .*the file has columns: url, width",
        ),
        (
            lambda d: (d / "cap.csv").write_text("caption\nx\n"),
            ["head", "{d}/cap.csv", "--url-col", "link"],
            r"cap.csv: --url-col 'link' is not a column; the file has: caption",
        ),
        (
            lambda d: (d / "cap.csv").write_text("caption\nx\n"),
            ["head", "{d}/cap.csv", "--preset", "laion5b"],
            r"unknown preset 'laion5b'; known presets: laion400m, cc3m, cc12m, yfcc15m, imagenet-captions, generic",
        ),
        (
            lambda d: (d / "latin1.csv").write_bytes("caption,url\nok,u\ncaf\xe9 noir,u\n".encode("latin-1")),
            ["head", "{d}/latin1.csv"],
            r"latin1.csv: line 3: bytes are not valid UTF-8 \(byte 0xe9",
        ),
        (
            lambda d: (d / "latin1.tsv").write_bytes("caf\xe9\thttp://x\n".encode("latin-1")),
            ["head", "{d}/latin1.tsv"],
            r"latin1.tsv: line 1: bytes are not valid UTF-8",
        ),
        (
            lambda d: (d / "bad.jsonl").write_bytes(b'{"caption": "ok"}\n{"caption": "\xff\xfe"}\n'),
            ["head", "{d}/bad.jsonl"],
            r"bad.jsonl: line 2: bytes are not valid UTF-8 \(byte 0xff",
        ),
        (
            lambda d: (d / "nulls.csv").write_text("caption,url\nfine,u1\n,u2\n"),
            ["head", "{d}/nulls.csv", "--strict"],
            r"file nulls.csv row 1 \(uid nulls.csv:1\): the caption is null or blank \(--strict\)",
        ),
        (
            lambda d: (d / "blank.jsonl").write_text('{"caption": "fine"}\n{"caption": "   "}\n'),
            ["head", "{d}/blank.jsonl", "--strict"],
            r"file blank.jsonl row 1 \(uid blank.jsonl:1\): the caption is null or blank",
        ),
        (
            lambda d: (d / "broken.json").write_text('[{"caption": "a"},\n {"caption": '),
            ["head", "{d}/broken.json"],
            r"broken.json: line 2: invalid JSON",
        ),
        (lambda d: (d / "x.tar").write_bytes(b"not a tar at all" * 100), ["head", "{d}/x.tar"], r"x.tar: not a readable tar"),
        (lambda d: tarfile.open(d / "none.tar", "w").close(), ["head", "{d}/none.tar"], r"none.tar: the tar holds no files"),
        (
            lambda d: (d / "x.tsv.gz").write_bytes(b"\x1f\x8b not really gzip"),
            ["head", "{d}/x.tsv.gz"],
            r"x.tsv.gz: cannot decompress \(.gz\)",
        ),
        (lambda d: (d / "x.zip").write_bytes(b"PK junk"), ["head", "{d}/x.zip"], r"x.zip: not a readable zip file"),
        (lambda d: (d / "notes.docx").write_bytes(b"x"), ["head", "{d}/notes.docx"], r"notes.docx: unknown file type .docx"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_culprit(tmp_path: Path, capsys, monkeypatch, make, args, expected) -> None:
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    if make is not None:
        make(tmp_path)
    code, out, err = run_cli([a.format(d=tmp_path) for a in args], capsys)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    import re

    assert re.search(expected, err), err


def test_cli_truncated_parquet(tmp_path: Path, capsys) -> None:
    write_laion(tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(["head", str(tmp_path / "cut.parquet")], capsys)
    assert code == 2
    assert "cut.parquet: not a readable parquet file (truncated or corrupt)" in err


def test_cli_unreachable_url(loopback_server, capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    url = loopback_server.url("gone.parquet")
    code, _, err = run_cli(["head", url], capsys)
    assert code == 2
    assert f"cannot download {url}: HTTP 404 Not Found" in err


def test_skip_bad_rows_drops_and_reports(tmp_path: Path, capsys) -> None:
    (tmp_path / "nulls.csv").write_text("caption,url\nfine,u1\n,u2\n  ,u3\nalso fine,u4\n")
    src = open_source(str(tmp_path / "nulls.csv"), skip_bad_rows=True)
    assert src.collect()["uid"].to_list() == ["nulls.csv:0", "nulls.csv:3"]
    report = validate_source(src)
    assert (report.rows, report.bad_captions) == (4, 2)
    assert report.first_bad == "file nulls.csv row 1 (uid nulls.csv:1)"
    code, out, err = run_cli(["head", str(tmp_path / "nulls.csv"), "--skip-bad-rows", "--check"], capsys)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 3
    assert "left out 2 rows with a null or blank caption" in err


def test_validate_finds_bad_utf8_past_the_eager_probe(tmp_path: Path, capsys) -> None:
    # the eager check reads the first 4 MiB; a bad byte further on is found when the whole file
    # is read, and still reported with its line
    good = "a tench in a pond,http://x\n" * 200_000
    (tmp_path / "big.csv").write_bytes(b"caption,url\n" + good.encode() + b"bad \xff byte,http://y\n")
    with pytest.raises(CurateError, match=r"big.csv: line 200002: bytes are not valid UTF-8"):
        validate_source(open_source(str(tmp_path / "big.csv")))
    code, _, err = run_cli(["head", str(tmp_path / "big.csv"), "--check"], capsys)
    assert code == 2 and "line 200002" in err


def test_demo_captions_file_is_already_canonical(tmp_path: Path) -> None:
    from curate.demo import ensure_demo

    root = ensure_demo(tmp_path / "demo", scale=0.02)
    raw = pl.read_parquet(root / "captions.parquet")
    df = open_source(str(root / "captions.parquet")).collect()
    canonical_ok(df)
    # nothing is renamed or re-keyed: the demo's own uids and extra columns come through as they are
    assert df.select(CANONICAL).equals(raw.select(CANONICAL))
    assert df.columns[len(CANONICAL) :] == [c for c in raw.columns if c not in CANONICAL]


@pytest.mark.slow  # builds the full default demo corpus (~20 s here)
def test_demo_spec(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CURATE_DEMO_DIR", str(tmp_path / "demo"))
    src = open_source("demo")
    assert (src.name, src.vocab, src.preset) == ("demo", "demo", None)
    df = src.collect(limit=5)
    canonical_ok(df)
    assert df["uid"].to_list() == pl.read_parquet(tmp_path / "demo" / "captions.parquet", n_rows=5)["uid"].to_list()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    captions=st.lists(
        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(lambda t: t.strip()),
        min_size=1,
        max_size=8,
    )
)
def test_any_unicode_caption_survives_every_format(tmp_path: Path, captions: list[str]) -> None:
    """Odd Unicode (combining marks, RTL, emoji, NUL, line separators) comes through unchanged."""
    urls = [f"http://i/{i}" for i in range(len(captions))]
    d = tmp_path / f"case{abs(hash(tuple(captions)))}"
    d.mkdir()
    pl.DataFrame({"caption": captions, "url": urls}).write_parquet(d / "c.parquet")
    (d / "c.jsonl").write_text("".join(json.dumps({"caption": c, "url": u}) + "\n" for c, u in zip(captions, urls)), encoding="utf-8")
    (d / "c.json").write_text(json.dumps([{"caption": c, "url": u} for c, u in zip(captions, urls)]), encoding="utf-8")
    pl.DataFrame({"caption": captions, "url": urls}).write_csv(d / "c.csv")
    for name in ("c.parquet", "c.jsonl", "c.json", "c.csv"):
        df = open_source(str(d / name)).collect()
        assert df["caption"].to_list() == captions, name
        assert df["uid"].to_list() == [f"{name}:{i}" for i in range(len(captions))]


# ---------------------------------------------------------------------------------------------
# one behaviour in every command: ragged lines, malformed JSON lines, captions without text


def _fruit_vocab(d: Path) -> Path:
    (d / "fruit.tsv").write_text("name\napple\nbanana\ncherry\n", encoding="utf-8")
    return d / "fruit.tsv"


def _every_command(d: Path, src: Path, *extra: str) -> list[list[str]]:
    v = str(_fruit_vocab(d))
    return [
        ["head", str(src), *extra],
        ["match", str(src), "--vocab", v, "-o", str(d / "m.parquet"), *extra],
        ["freq", str(src), "--vocab", v, "-o", str(d / "f"), *extra],
        ["build", "--source", str(src), "--vocab", v, "--out-root", str(d / "b"), "--allow-shortfall", *extra],
    ]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("r.tsv", "caption\turl\nan apple\thttp://x/1\na banana\thttp://x/2\textra\na cherry\thttp://x/3\n", "r.tsv: line 3 has 3 fields, the header 2"),
        ("r.csv", 'caption,url\n"an apple, red",http://x/1\na banana,http://x/2,extra\na cherry,u\n', "r.csv: line 3 has 3 fields, the header 2"),
        ("r.jsonl", '{"caption": "an apple"}\n{"caption": "a banana"}\n{"caption": oops}\n', "r.jsonl: line 3: invalid JSON"),
    ],
)
def test_a_bad_line_fails_every_command_naming_it(tmp_path: Path, capsys, monkeypatch, name, text, expected) -> None:
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / name
    src.write_text(text, encoding="utf-8")
    for args in _every_command(tmp_path, src):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and expected in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err


def test_a_malformed_json_line_past_the_schema_sample_is_named(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    lines = [json.dumps({"caption": f"an apple {i}"}) for i in range(3000)]
    lines[2499] = '{"caption": "a banana", }'
    (tmp_path / "long.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CurateError, match=r"long.jsonl: line 2500: invalid JSON"):
        open_source(str(tmp_path / "long.jsonl"))


def test_a_caption_column_that_is_not_text_is_an_error(tmp_path: Path) -> None:
    pl.DataFrame({"caption": [1, 2, 3], "url": ["a", "b", "c"]}).write_parquet(tmp_path / "n.parquet")
    with pytest.raises(CurateError, match=r"n.parquet: caption column 'caption' holds Int64, not text"):
        open_source(str(tmp_path / "n.parquet"))
    (tmp_path / "n.jsonl").write_text('{"text": 7, "url": "u"}\n', encoding="utf-8")
    with pytest.raises(CurateError, match=r"caption column 'text' holds Int64"):
        open_source(str(tmp_path / "n.jsonl"))


def test_captions_without_text_are_counted_everywhere_and_strict_names_the_first(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    n = 3000
    captions: list[str | None] = [f"an {['apple', 'banana', 'cherry'][i % 3]} photo {i}" for i in range(n)]
    blank = [0, 100, 2500, 2501]  # the first is the very first row
    for i in blank:
        captions[i] = None if i % 2 else "   "
    src = tmp_path / "c.parquet"
    pl.DataFrame({"uid": [f"u{i}" for i in range(n)], "caption": captions}).write_parquet(src, row_group_size=256)
    head, match, freq, build = _every_command(tmp_path, src)
    code, out, err = run_cli(head, capsys)
    assert code == 0 and len(out.strip().splitlines()) == 11, err
    code, _, err = run_cli(match, capsys)
    assert code == 0 and f"{n:,} captions" in err and "4 without caption text (no label)" in err, err
    assert pl.read_parquet(tmp_path / "m.parquet").filter(pl.col("uid") == "u0")["labels"].to_list() == [[]]
    code, out, err = run_cli(freq, capsys)
    assert code == 0 and "4 captions without text" in out, (out, err)
    assert json.loads((tmp_path / "f" / "stats.json").read_text())["no_text"] == 4
    code, out, err = run_cli(build, capsys)
    assert code == 0, err
    (folder,) = (tmp_path / "b").iterdir()
    assert json.loads((folder / "stats.json").read_text())["dropped"]["no_text"] == 4
    assert "| `no_text` | 4 |" in (folder / "card.md").read_text()
    for args in (head, match, freq, build):
        code, _, err = run_cli([*args, "--strict"], capsys)
        assert code == 2 and "row 0 (uid u0): the caption is null or blank (--strict)" in err, (args, err)
    # the first bad row is named even when it sits deep in the file, behind good rows
    pl.DataFrame({"uid": [f"u{i}" for i in range(n)], "caption": captions}).slice(1).write_parquet(src, row_group_size=256)
    code, _, err = run_cli([*match, "--strict"], capsys)
    assert code == 2 and "row 99 (uid u100)" in err, err


def test_a_bad_line_in_a_compressed_file_names_the_users_file(tmp_path: Path, monkeypatch) -> None:
    import gzip

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    with gzip.open(tmp_path / "r.tsv.gz", "wt") as f:
        f.write("caption\turl\nan apple\thttp://x/1\na banana\thttp://x/2\tx\n")
    with pytest.raises(CurateError, match=r"^\S*r\.tsv\.gz: line 3 has 3 fields") as e:
        open_source(str(tmp_path / "r.tsv.gz"))
    assert "cache" not in str(e.value)


def test_a_sharded_runs_output_folder_is_not_read_as_captions(tmp_path):
    # what curate match --shards writes (labels, counts, markers): the error names what to do with it
    from curate.sources import open_source

    src = tmp_path / "caps.csv"
    src.write_text("caption\na tiger shark\ntwo geese\n", encoding="utf-8")
    out = tmp_path / "m"
    from curate.cli import main

    main(["match", str(src), "--vocab", "imagenet1k", "--out", str(out), "--shards", "2"])
    assert any(p.suffix == ".done" for p in out.iterdir())
    with pytest.raises(CurateError, match="sharded run's outputs.*--reduce.*--labels-from"):
        open_source(str(out))
    # a sharded freq's folder holds counts only: no labels to build from
    main(["freq", str(src), "--vocab", "imagenet1k", "--out", str(tmp_path / "f"), "--shards", "2"])
    with pytest.raises(CurateError, match="sharded run's outputs.*--reduce") as e:
        open_source(str(tmp_path / "f" / "shards"))
    assert "--labels-from" not in str(e.value)
