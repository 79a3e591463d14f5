"""curate: controlled, imbalanced image-text datasets for studying CLIP and its alternatives.

Stages (one module each): ``sources`` → ``match`` → ``freq`` → ``sample`` + ``captions`` →
``manifest`` → ``shards`` → ``train``. Each stage is a function from table to table; the CLI in
``curate.cli`` is a thin layer over them.
"""

__version__ = "0.1.0"
