"""The extraction loop: files decoded one ahead, single images gathered into passes.

:func:`extraction_passes` is the one loop behind
:meth:`deepmetric.features.extract.Extractor.run` (cached, locked) and
:meth:`~deepmetric.features.extract.Extractor.extract_items` (uncached): what differs
between them is what each does with a decoded file and with a pass.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

from deepmetric.video.frames import Frames, MediaError, read_frames

__all__ = ["extraction_passes", "malloc_trim"]


def extraction_passes(paths: Sequence[str], n_frames: int, image_batch: int,
                      prepare: Callable[[str, Frames | MediaError], list],
                      flushed: Callable[[], None] = lambda: None
                      ) -> Iterator[tuple[list, int]]:
    """The extraction loop of :meth:`Extractor.run
    <deepmetric.features.extract.Extractor.run>` and :meth:`Extractor.extract_items
    <deepmetric.features.extract.Extractor.extract_items>`.

    Decodes ``paths`` in order, the next file while the current one is worked on, and
    hands each decoded file (or its decoding exception) to ``prepare(path, frames)``,
    which returns the file's work units (possibly none). Yields ``(units, pad)``: the
    units to run through the networks in one pass, and the number of crops the pass is
    padded to. Single images (one-frame files) wait until ``image_batch`` are ready and
    go through in passes of exactly ``image_batch`` crops (padded); any other file
    (a clip, or a file that could not be read) first lets the images waiting before it
    go, then its units go one per pass, unpadded. ``flushed()`` is called after each
    round of waiting images, and after each clip, has been consumed.

    Parameters
    ----------
    paths : sequence of str
        Media files, in the order they are worked on.
    n_frames : int
        Frames sampled per clip (:func:`deepmetric.video.frames.read_frames`).
    image_batch : int
        Single images per pass.
    prepare : callable
        ``prepare(path, frames)`` → list of units; ``frames`` is a
        :class:`~deepmetric.video.frames.Frames` or the file's
        :class:`~deepmetric.video.frames.MediaError`.
    flushed : callable
        Called after the passes of each round, once the consumer has handled them.

    Yields
    ------
    units : list
        Units of one pass, in the order of ``paths``.
    pad : int
        ``image_batch`` for a pass of single images, 0 for a clip's.
    """
    waiting: list = []

    def flush() -> Iterator[tuple[list, int]]:
        for i in range(0, len(waiting), image_batch):
            yield waiting[i:i + image_batch], image_batch
        waiting.clear()
        flushed()

    for path, frames_or_exc in _prefetched(paths, n_frames):
        single = not isinstance(frames_or_exc, BaseException) \
            and len(frames_or_exc.indices) <= 1
        if not single:
            yield from flush()  # the images before it go first: the order is kept
        units = prepare(path, frames_or_exc)
        del frames_or_exc
        if single:
            waiting += units
            if len(waiting) >= image_batch:
                yield from flush()
            continue
        for unit in units:
            yield [unit], 0
        del units
        yield from flush()
    yield from flush()


_MALLOC_TRIM = None  # glibc's malloc_trim, or False where there is none; looked up once


def malloc_trim() -> bool:
    """Return freed heap memory to the OS (glibc ``malloc_trim(0)``).

    Returns
    -------
    bool
        True when glibc released memory; False when nothing was released or the C library
        is not glibc (then this does nothing).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
            _MALLOC_TRIM = False
    return bool(_MALLOC_TRIM and _MALLOC_TRIM(0))


def _prefetched(paths: Sequence[str], n: int) -> Iterator[tuple[str, object]]:
    """``(path, frames)`` for each path in order (``frames`` the :class:`MediaError` of a
    file that could not be decoded); the next file is decoded in a thread meanwhile."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_read, paths[0], n) if paths else None
        for k, path in enumerate(paths):
            frames_or_exc = pending.result()
            pending = pool.submit(_read, paths[k + 1], n) if k + 1 < len(paths) else None
            yield path, frames_or_exc
            del frames_or_exc


def _read(path: str, n: int):
    """Decode in the prefetch thread; return the exception instead of raising it."""
    try:
        return read_frames(path, n)
    except Exception as exc:  # noqa: BLE001 — re-raised in the main thread with context
        if not isinstance(exc, MediaError):
            exc = MediaError(f"{path}: {type(exc).__name__}: {exc}")
        return exc

