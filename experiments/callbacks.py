"""Hydra callbacks of the experiments (listed in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

__all__ = ["SlurmStatesCallback", "MergeStudyCallback"]


class SlurmStatesCallback(Callback):
    """Job states of a ``hydra/launcher=slurm`` sweep from ``squeue`` where ``sacct`` fails.

    hydra-submitit-launcher waits on submitit, which asks ``sacct`` for job states; on a
    cluster without accounting storage every poll warns ("Bypassing sacct error") and a job
    killed before writing its result is never seen as finished (the sweep waits forever).
    Where ``sacct`` does not answer, this installs
    :func:`deepmetric.cluster.install_squeue_watcher` (squeue, then sacct). It does nothing
    for other launchers or with accounting.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        if not target.endswith("SlurmLauncher"):
            return
        from deepmetric.cluster import install_squeue_watcher, sacct_works

        if not sacct_works():
            install_squeue_watcher()


class MergeStudyCallback(Callback):
    """The rows of a generalisation-study multirun, merged into the sweep folder.

    Each job of ``python -m experiments.generalization -m study.rows=A,B,...`` writes its
    rows into its own folder (``<sweep dir>/<job number>/generalization.json``). When the
    multirun ends (every job finished, on any launcher) this writes all of them, in job
    order, into ``<sweep dir>/generalization.json`` and its table into
    ``generalization.md``; a row named in several jobs (e.g. ``study.previous`` rows) is listed
    once, where it first came, with the last job's values. A job that
    wrote nothing (it failed before its first row) is named in the log.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        import json
        import logging
        from pathlib import Path

        from experiments.generalization import data_names, write

        sweep = Path(config.hydra.sweep.dir)
        merged: dict[tuple[str, str], dict] = {}
        jobs = sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()),
                      key=lambda p: int(p.name))
        for job in jobs:
            path = job / "generalization.json"
            if not path.is_file():
                logging.getLogger("generalization").warning("%s: no rows (the job failed "
                                                            "before its first row)", job)
                continue
            for row in json.loads(path.read_text()):
                merged[(row["group"], row["name"])] = row  # first place, last value
        write(sweep, list(merged.values()), OmegaConf.select(config, "eval_data.head"),
              data_names(config))
