"""Fixtures of the Hydra jobs' tests: their environment and the tiny demo they run on.

The jobs run as ``python -m experiments...`` subprocesses, exactly as a user starts them,
with outputs in a temporary folder. They share the tests' cache (``$DEEPMETRIC_CACHE``, set
by ``tests/conftest.py``): converted weights, the tiny demo clips (built once, here) and
their features (extracted by the first job, reused by the others).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest


@dataclass(frozen=True)
class TinyDemo:
    """The demo manifest (``items``) and the overrides that make a job read it."""

    items: pd.DataFrame
    overrides: tuple[str, ...]


@pytest.fixture(scope="session")
def sweep_env(tmp_path_factory) -> dict[str, str]:
    """Environment of the job subprocesses: the shared test cache, outputs in tmp."""
    return {**os.environ, "DEEPMETRIC_OUTPUTS": str(tmp_path_factory.mktemp("outputs")),
            "DEEPMETRIC_CACHE": os.environ["DEEPMETRIC_CACHE"], "DEEPMETRIC_OFFLINE": "1",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
            "HYDRA_FULL_ERROR": "1"}


@pytest.fixture(scope="session")
def tiny_demo(sweep_env) -> TinyDemo:
    """A tiny demo (6 real + 6 self-blended clips of 6 frames), built once into the shared
    cache (where the jobs look)."""
    from deepmetric.datasets import demo

    size = {"n_clips": 6, "frames": 6}
    items = demo.load(Path(sweep_env["DEEPMETRIC_CACHE"]) / "demo", **size)
    return TinyDemo(items, tuple(f"data.{k}={v}" for k, v in size.items()))
