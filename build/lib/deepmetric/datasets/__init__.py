"""Dataset adapters: each module exposes ``load(...)`` returning a validated manifest.

=========== ===================================================================
name        adapter
=========== ===================================================================
``ffpp``    :func:`deepmetric.datasets.ffpp.load` (FaceForensics++ download layout)
``celebdf`` :func:`deepmetric.datasets.celebdf.load` (Celeb-DF v1/v2)
``dfdc``    :func:`deepmetric.datasets.dfdc.load` (DFDC folders with ``metadata.json``)
``folder``  :func:`deepmetric.datasets.folder.load` (``real/`` and ``fake/`` folders)
``manifest``:func:`deepmetric.datasets.manifest.load` (a CSV of ``path,label,...``)
``demo``    :func:`deepmetric.datasets.demo.load` (built-in self-blended demo clips)
=========== ===================================================================

In a Hydra config, name the adapter directly (``_target_: deepmetric.datasets.ffpp.load``);
:func:`load_dataset` is the same lookup by name for scripts. Adapters are imported lazily,
so importing this package reads no file and builds no model.
"""

from __future__ import annotations

import importlib
from typing import Any, Hashable, Iterable

import pandas as pd

__all__ = ["ADAPTERS", "load_dataset", "connected_groups"]

ADAPTERS: tuple[str, ...] = ("ffpp", "celebdf", "dfdc", "folder", "manifest", "demo")


def load_dataset(name: str, **kwargs: Any) -> pd.DataFrame:
    """Call ``deepmetric.datasets.<name>.load(**kwargs)``.

    Parameters
    ----------
    name : str
        One of :data:`ADAPTERS`.
    **kwargs
        Passed to the adapter's ``load``.

    Returns
    -------
    pandas.DataFrame
        The adapter's validated manifest.
    """
    if name not in ADAPTERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(ADAPTERS)}")
    return importlib.import_module(f"{__name__}.{name}").load(**kwargs)


def connected_groups(
    nodes: Iterable[Hashable], edges: Iterable[tuple[Hashable, Hashable]]
) -> dict[Hashable, str]:
    """Name the connected components of an identity graph (union-find).

    Used by the adapters whose fakes join two identities (FF++ ``TTT_SSS``, Celeb-DF
    ``idX_idY_NNNN``): every identity linked by a chain of manipulations lands in one group.

    Parameters
    ----------
    nodes : iterable of hashable
        Identities (isolated ones form their own group).
    edges : iterable of (hashable, hashable)
        Identity pairs joined by a manipulation; their ends need not be in ``nodes``.

    Returns
    -------
    dict
        Identity → group name. The name is the component's sorted members joined by
        ``"-"`` (``"033-097"``); components of more than 4 members are named
        ``"<smallest>+<n-1>"`` to keep names short. Names are unique per component.
    """
    parent: dict[Hashable, Hashable] = {}

    def find(x: Hashable) -> Hashable:
        parent.setdefault(x, x)
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for n in nodes:
        find(n)
    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    members: dict[Hashable, list[str]] = {}
    for n in list(parent):
        members.setdefault(find(n), []).append(str(n))
    names = {}
    for root, ms in members.items():
        ms.sort()
        names[root] = "-".join(ms) if len(ms) <= 4 else f"{ms[0]}+{len(ms) - 1}"
    return {n: names[find(n)] for n in parent}


def __getattr__(name: str) -> Any:
    """``deepmetric.datasets.ffpp`` etc. import their adapter module on first access."""
    if name in ADAPTERS:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
