"""Hydra callbacks of the experiments (listed in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

__all__ = ["SlurmStatesCallback"]


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
