"""Where matching runs, kept apart from what matching does (:mod:`curate.match`).

- :mod:`curate.engine.local`: one process, batches matched side by side on every core, output in
  input order (the default engine);
- :mod:`curate.engine.shard`: the per-shard contract for running many processes (a SLURM array, a
  shell loop): shard ``i`` of ``N`` writes its outputs, its partial counts and a completion marker;
  a reduce adds the partials; a rerun skips completed shards;
- :mod:`curate.engine.ray`: the same stage on a Ray cluster (Ray Data, optional extra
  ``curate[ray]``).

Engines are looked up by name in :data:`ENGINES`; each gives the same bytes as the local one.
"""

from __future__ import annotations

ENGINES = ("local", "ray")
