"""Source column layouts (presets): which input column becomes which canonical column.

A registry with no heavy imports, so the CLI builds its help text from it (``curate --help``
loads no data library). ``curate.sources`` applies the layouts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """How one kind of source names its columns: candidates per canonical column, first present wins.

    ``compose`` lists canonical fields joined (space-separated, nulls skipped) into the caption when
    no caption column exists; ``detect`` lists columns whose joint presence identifies the layout.
    """

    name: str
    description: str
    caption: tuple[str, ...] = ("caption", "text", "TEXT", "Caption", "alt", "alt_text", "sentence")
    url: tuple[str, ...] = ("url", "URL", "image_url", "img_url", "downloadurl")
    uid: tuple[str, ...] = ("uid", "key", "id", "SAMPLE_ID", "sample_id")
    path: tuple[str, ...] = ("path", "image_path", "file")
    title: tuple[str, ...] = ("title",)
    tags: tuple[str, ...] = ("tags",)
    description_col: tuple[str, ...] = ("description",)
    wnid: tuple[str, ...] = ("wnid",)
    compose: tuple[str, ...] = ()
    detect: tuple[str, ...] = ()
    unquote_plus: bool = False  # Flickr (YFCC) text fields are URL-encoded with '+' for spaces
    vocab: str = "imagenet1k"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "laion400m",
            "LAION-400M/2B/5B parquet: URL, TEXT, SAMPLE_ID (or key), HEIGHT, WIDTH, similarity, ...",
            caption=("TEXT", "caption", "text"),
            url=("URL", "url"),
            uid=("SAMPLE_ID", "key", "uid"),
            detect=("URL", "TEXT"),
        ),
        Preset(
            "cc3m",
            "Conceptual Captions 3M TSV: caption<TAB>url, with or without a header row.",
            uid=("key", "uid", "id"),
        ),
        Preset(
            "cc12m",
            "Conceptual 12M TSV: url<TAB>caption, with or without a header row.",
            uid=("key", "uid", "id"),
        ),
        Preset(
            "yfcc15m",
            "YFCC15M (Flickr) JSONL/parquet/TSV: title, description, usertags, downloadurl, photoid; "
            "caption = title + description when there is no caption column.",
            caption=("caption", "text"),
            url=("downloadurl", "url", "photo_url", "pageurl"),
            uid=("photoid", "photo_id", "key", "id"),
            tags=("usertags", "tags", "user_tags"),
            compose=("title", "description"),
            detect=("photoid", "title", "description"),
            unquote_plus=True,
        ),
        Preset(
            "imagenet-captions",
            "ImageNet-Captions JSON records: filename, wnid, title, tags (list), description; "
            "caption = title + tags + description.",
            caption=(),
            url=("url",),
            uid=("filename",),
            compose=("title", "tags", "description"),
            detect=("filename", "wnid", "title"),
        ),
        Preset("generic", "Any table with a caption-like column (caption/text/TEXT/alt...)."),
    )
}


def preset_names() -> str:
    """``laion400m, cc3m, ...``: the registered presets, for help text and messages."""
    return ", ".join(PRESETS)
