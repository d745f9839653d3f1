"""Fill the feature cache, sharded over jobs: the extraction step of ``experiments.run`` alone.

    python -m experiments.extract data=ffpp data.root=/data/ffpp            # one process
    python -m experiments.extract data=dfdc_faces extract.jobs=2 extract.executor=local
    python -m experiments.extract data=dfdc_faces extract.jobs=64 extract.executor=slurm

The same ``data``/``eval_data``/``extractor`` keys as ``experiments.run`` (its config is
included), so a run with the same keys afterwards finds every item cached. The splitting,
the jobs and the merged report are :func:`deepmetric.features.shard.extract_sharded`; this
file only reads the config. Writes ``extraction.json`` (``extraction_eval.json`` for
``eval_data``) into the Hydra run dir and exits 1, naming the failed shards with their job
ids and logs, when a shard did not finish: the same command again extracts only what is
missing.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from deepmetric.features.extract import Extractor
from deepmetric.features.shard import ShardedExtraction, extract_sharded, failure_message
from deepmetric.storage import atomic_write
from deepmetric.text import printable
from experiments.builders import (build_extractor, check_config, extractor_for, load_items,
                                  training_items)

log = logging.getLogger(__name__)


def wants_sharding(ext: DictConfig | None) -> bool:
    """Whether the ``extract`` keys ask for more than one in-process job."""
    return bool(ext) and (int(ext.jobs) > 1 or str(ext.executor) != "none")


def extract_items(extractor: Extractor, items: pd.DataFrame, ext: DictConfig,
                  tag: str = "data") -> ShardedExtraction:
    """Sharded extraction of one manifest with the ``extract`` keys of the config.

    Parameters
    ----------
    extractor : Extractor
        From ``cfg.extractor`` (with the dataset's detector overrides).
    items : pandas.DataFrame
        The manifest.
    ext : omegaconf.DictConfig
        ``cfg.extract`` (conf/extract/default.yaml).
    tag : str
        ``"data"`` or ``"eval"``: names the shard folder (``<extract.folder>/<tag>/``).

    Returns
    -------
    ShardedExtraction
        The merged report and the failed shards.
    """
    slurm = OmegaConf.to_container(ext.slurm, resolve=True) if ext.get("slurm") else {}
    threads = ext.get("threads")
    return extract_sharded(extractor, items, jobs=int(ext.jobs), executor=str(ext.executor),
                           folder=Path(str(ext.folder)) / tag, slurm=slurm,
                           threads=None if threads is None else int(threads),
                           poll_s=float(ext.poll_s),
                           progress=bool(getattr(extractor, "progress", True)))


def extract(cfg: DictConfig) -> int:
    """Extract ``data`` (and ``eval_data``) as the ``extract`` keys say; the exit status.

    Returns
    -------
    int
        0 when every shard finished (items that fail to decode are listed in the report,
        as in ``experiments.run``), 1 when a shard did not finish.
    """
    check_config(cfg)
    # the run's own readers: the same items, copies included, fill the same cache
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    extractor, _ = build_extractor(cfg)
    todo = []
    todo.append(("data", extractor_for(extractor, cfg.data), training_items(cfg)))
    if cfg.get("eval_data"):
        todo.append(("eval", extractor_for(extractor, cfg.eval_data),
                     load_items(cfg.eval_data, "eval_data")))
    status = 0
    for tag, ex, rows in todo:
        result = extract_items(ex, rows, cfg.extract, tag)
        rep = result.report
        name = f"extraction{'' if tag == 'data' else '_' + tag}.json"
        atomic_write(out / name, json.dumps(rep, indent=1, default=str))
        log.info("%s: %d items in %d shard(s) (%s): %d extracted, %d cached, %d failed, "
                 "%d in unfinished shards; %.1f s, %.2f items/s; report %s", tag,
                 rep["n_items"], rep["jobs"], rep["executor"], rep["n_extracted"],
                 rep["n_cached"], rep["n_failed"], rep["n_unfinished"], rep["seconds"],
                 rep["items_per_second"], out / name)
        for f in rep["failures"][:20]:
            log.warning("FAILED item %s: %s", printable(f["path"]), printable(f["error"]))
        if result.failed:
            log.error("%s", failure_message(rep))
            status = 1
    return status


@hydra.main(config_path="conf", config_name="extract", version_base="1.3")
def main(cfg: DictConfig) -> None:
    status = extract(cfg)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
