"""Cache: one ``.npz`` file per clip, under a directory keyed by the extraction settings.

- The directory name is a hash of every setting that changes the output (detector,
  embedder, frame count, feature blocks), so stale results are never reused.
- A clip's file name is its sanitised stem plus a fingerprint of its *content* (a hash of
  every byte), so a file edited anywhere, even in place with its size kept, is extracted
  again, while a dataset that is copied, moved, re-mounted or staged to node-local scratch
  (new paths, new modification times) keeps its cache. The hash is computed once per
  file state (path, inode, size, modification and change times), and kept on disk in
  ``<root>/fingerprints/`` (:class:`FingerprintIndex`), so the run after a sharded
  extraction does not read every file again. A cache file keeps a sample of its source
  (:func:`source_sample`): a fingerprint read from the index is checked against it before
  the file is served, so an index line cannot serve one file's features for another.
- Writes are atomic (a unique temp file in ``<dir>/tmp/``, fsync, ``os.replace``): a run
  killed midway leaves either no file or a complete one, never a partial file under the
  final name; the next job to take the clip's lock removes a killed writer's temp file.
  Files are written with fixed zip timestamps, so the same arrays give the same bytes.
- Concurrent jobs coordinate with an advisory lock per clip (``fcntl.flock``): a job that
  finds another extracting the same clip skips it (:meth:`FeatureCache.try_lock`, a
  non-blocking lock), goes on with other clips and revisits it later, reusing the other
  job's result. The lock dies with its process (killed, timed out): never a stale lock.
- A corrupt file (bad zip, bad CRC, missing arrays) is reported, moved aside as
  ``*.corrupt`` and extracted again.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import re
import time
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from deepmetric.storage import atomic_file, atomic_write, cache_root, file_lock
from deepmetric.text import printable

__all__ = ["FeatureCache", "CacheError", "FingerprintIndex", "settings_hash",
           "content_fingerprint", "flush_fingerprints", "source_sample", "SOURCE"]

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class CacheError(RuntimeError):
    """A cache file is unreadable; the message names it."""


def settings_hash(settings: Mapping) -> str:
    """A short stable hash of a JSON-serialisable settings mapping."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def write_npz(path: Path, arrays: Mapping[str, np.ndarray],
              tmp_dir: Path | None = None) -> None:
    """Atomically write arrays as a reproducible ``.npz`` (fixed timestamps, sorted names).

    The bytes go to a unique temp file first, in ``tmp_dir`` (same file system; default
    ``path``'s folder), named ``.<file name>.<random>.tmp``, are flushed to disk, then
    replace ``path`` (:func:`deepmetric.storage.atomic_file`: an error names ``path``).
    """
    with atomic_file(path, tmp_dir) as tmp, open(tmp, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=1) as zf:
            for name in sorted(arrays):
                arr = np.asarray(arrays[name])
                if arr.dtype == object:
                    raise TypeError(f"{name}: object arrays are not cached")
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arr, allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue(), compresslevel=1)
        fh.flush()
        os.fsync(fh.fileno())


def read_npz(path: Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read a cache file fully (CRC-checked); raise :class:`CacheError` if it is damaged."""
    try:
        # open the file here: np.load leaks its own handle when the zip is truncated
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CacheError(f"{path}: corrupt cache file ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in required if k not in arrays]
    if missing:
        raise CacheError(f"{path}: corrupt cache file (missing arrays {missing})")
    return arrays


#: bytes hashed per read when fingerprinting a file
_CHUNK = 1024 * 1024
#: file state (abs path, inode, size, mtime ns, ctime ns) -> fingerprint, in this process
_fingerprints: dict[tuple, str] = {}


class FingerprintIndex:
    """Content fingerprints kept on disk, so that another process does not hash again.

    A sharded extraction hashes every media file in its jobs; the run that trains on the
    cache afterwards would hash them all again in one process (for DFDC, 470 GB read once
    more). Each process that hashes a file appends a line to its own file in ``folder``
    (``<host>-<pid>.tsv``: path, inode, size, mtime and ctime in ns, fingerprint), and a
    process reads every such file once, on its first lookup. Lines are written in batches
    (every 256 new fingerprints or 30 s, and at exit). A reader that finds
    :attr:`COMPACT_AT` files or more merges them into one. An entry is used only when the
    file's path, inode, size, mtime *and* ctime all match, and ctime cannot be set back by a
    user, so an in-place edit is hashed again even when its mtime is restored. A line a
    killed process left half-written (no newline, or not six well-formed fields) is
    skipped.

    Parameters
    ----------
    folder : path-like
        Where the index files are (``<cache root>/fingerprints``).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._known: dict[tuple, str] | None = None
        self._own: Path | None = None  # this process's index file
        self._pid = -1
        self._pending: list[str] = []
        self._flushed = time.monotonic()

    #: index files a reader merges into one (each process that hashes adds a file)
    COMPACT_AT = 64

    def get(self, key: tuple) -> str | None:
        if self._known is None:
            self._known = {}
            read = []
            with contextlib.suppress(OSError):
                for f in sorted(self.folder.glob("*.tsv")):
                    with contextlib.suppress(OSError), open(f, encoding="utf-8",
                                                            errors="surrogateescape") as fh:
                        for line in fh:
                            parts = line.rstrip("\n").split("\t")
                            if len(parts) == 6 and line.endswith("\n") and \
                                    all(v.isdigit() for v in parts[1:5]) and \
                                    _HEX16.fullmatch(parts[5]):
                                self._known[(parts[0], *map(int, parts[1:5]))] = parts[5]
                        read.append(f)
            if len(read) >= self.COMPACT_AT:
                self._compact(read)
        return self._known.get(key)

    def _compact(self, files: list[Path]) -> None:
        """Merge the index files just read into one and remove them. A process still
        writing to one of them recreates it at its next flush (files are opened by name);
        lines appended between this read and the removal are lost, so those files are
        hashed once more later: never a wrong fingerprint, at worst a repeated hash."""
        merged = self.folder / f"merged-{uuid.uuid4().hex[:12]}.tsv"
        try:
            with atomic_file(merged) as tmp, open(tmp, "w", encoding="utf-8",
                                                  errors="surrogateescape") as fh:
                fh.writelines(_index_line(k, fp) for k, fp in self._known.items())
        except OSError:  # a read-only or full cache: the files stay as they are
            return
        for f in files:
            with contextlib.suppress(OSError):
                f.unlink()

    def put(self, key: tuple, fingerprint: str) -> None:
        if self._known is not None:
            self._known[key] = fingerprint
        if "\t" in key[0] or "\n" in key[0]:
            return  # not representable in the index; hashed again next time
        if self._pid != os.getpid():  # first put, or a forked child: a file of its own
            self._own, self._pid, self._pending = None, os.getpid(), []
            atexit.register(self.flush)
        self._pending.append(_index_line(key, fingerprint))
        if len(self._pending) >= 256 or time.monotonic() - self._flushed > 30:
            self.flush()

    def flush(self) -> None:
        """Append the pending lines to this process's index file (also run at exit; a
        killed process loses only its unwritten lines, which are hashed again later)."""
        if not self._pending or self._pid != os.getpid():
            return
        lines, self._pending = self._pending, []
        self._flushed = time.monotonic()
        try:
            if self._own is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                host = re.sub(r"[^A-Za-z0-9._-]+", "_", os.uname().nodename)[:40]
                self._own = self.folder / f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}.tsv"
            with open(self._own, "a", encoding="utf-8", errors="surrogateescape") as fh:
                fh.write("".join(lines))
        except OSError:
            pass  # a read-only cache: the fingerprints are still right, only not kept


_indexes: dict[str, FingerprintIndex] = {}
_HEX16 = re.compile(r"[0-9a-f]{16}")


def _index_line(key: tuple, fingerprint: str) -> str:
    """One index line: path, inode, size, mtime ns, ctime ns, fingerprint (tab-separated)."""
    return "\t".join([key[0], *map(str, key[1:]), fingerprint]) + "\n"


def flush_fingerprints() -> None:
    """Write every pending fingerprint of this process to its index file now (an
    extraction run does it before it returns, so a later kill loses none)."""
    for index in list(_indexes.values()):
        index.flush()


def content_fingerprint(path: str | os.PathLike,
                        index: str | os.PathLike | None = None) -> str:
    """A 16-hex-digit fingerprint of a file's whole content (BLAKE2b over every byte).

    Independent of the path and modification time; any edit changes it, including one in
    the middle of a file that keeps its size. Memoised per (path, inode, size, mtime,
    ctime), so repeated lookups in one process read the file once; with ``index`` (a
    :class:`FingerprintIndex` folder), also across processes. A missing file gets a
    fingerprint of its path (so a later real file never collides with it).
    """
    p = os.path.abspath(path)
    try:
        memo = _state(p)
    except FileNotFoundError:
        return hashlib.sha1(f"missing|{p}".encode("utf-8", "surrogateescape")).hexdigest()[:16]
    if memo in _fingerprints:
        return _fingerprints[memo]
    store = None
    if index is not None:
        store = _indexes.setdefault(str(index), FingerprintIndex(index))
        known = store.get(memo)
        if known is not None:
            _fingerprints[memo] = known
            _from_index.add(memo)  # another process's word: checked before it is served
            return known
    h = hashlib.blake2b(f"{memo[2]}|".encode(), digest_size=8)
    with open(p, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    _fingerprints[memo] = h.hexdigest()
    if store is not None:
        store.put(memo, _fingerprints[memo])
    return _fingerprints[memo]


def _state(path: str) -> tuple:
    """What identifies a file's content between two hashes: absolute path, inode, size,
    modification and change times (ns)."""
    st = os.stat(path)
    return (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


#: file states whose fingerprint came from the on-disk index (another process's line, not
#: hashed here): a cache file is served for them only when its source sample matches
_from_index: set[tuple] = set()
#: the array a cache file keeps of its source (:func:`source_sample`)
SOURCE = "source_sample"
#: bytes of a file's head and of its tail in :func:`source_sample`
_SAMPLE = 64 * 1024


def source_sample(path: str | os.PathLike) -> np.ndarray:
    """A digest of a file's size, first and last 64 KiB: uint8 (16,).

    Each cache file keeps the sample of the media file it was extracted from, so that a
    fingerprint read from the index (a line another process wrote, or a forged one) is
    checked against the file itself, reading 128 KiB rather than the whole file, before
    another file's features are served for it.
    """
    size = os.stat(path).st_size
    h = hashlib.blake2b(f"{size}|".encode(), digest_size=16)
    with open(path, "rb") as fh:
        h.update(fh.read(_SAMPLE))
        if size > _SAMPLE:
            fh.seek(max(_SAMPLE, size - _SAMPLE))
            h.update(fh.read(_SAMPLE))
    return np.frombuffer(h.digest(), np.uint8).copy()


class FeatureCache:
    """Per-clip feature files under ``root/<settings-hash>/``.

    Parameters
    ----------
    root : path-like, optional
        Cache root; default ``features/`` under :func:`deepmetric.storage.cache_root`.
    settings : mapping
        Every setting that changes the cached arrays; hashed into the directory name and
        written to ``settings.json`` there for humans.
    """

    REQUIRED = ("frame_index", "found")

    def __init__(self, root: str | os.PathLike | None = None, settings: Mapping | None = None):
        self.root = Path(root) if root is not None else cache_root() / "features"
        self.settings = dict(settings or {})
        self.dir = self.root / settings_hash(self.settings)

    def _ensure_dir(self) -> None:
        if not (self.dir / "settings.json").exists():
            atomic_write(self.dir / "settings.json",
                         json.dumps(self.settings, sort_keys=True, indent=1, default=str))

    def path_for(self, media_path: str | os.PathLike, variant: str | None = None) -> Path:
        """The cache file of a media file (it need not exist).

        ``variant`` names a derived version of the same file (e.g. ``"sbi0"``, a
        self-blended copy); it is appended to the file name.
        """
        p = Path(os.path.abspath(media_path))
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem)[:40] or "item"
        tail = f"-{re.sub(r'[^A-Za-z0-9._-]+', '_', variant)}" if variant else ""
        fp = content_fingerprint(p, self.root / "fingerprints")
        return self.dir / f"{stem}-{fp}{tail}.npz"

    def has(self, media_path: str | os.PathLike, variant: str | None = None) -> bool:
        """Whether a complete file exists for this media file (not read); False when the
        media file cannot be read (it cannot be fingerprinted: it is extracted, and fails
        there by name)."""
        try:
            path = self.path_for(media_path, variant)
        except OSError:
            return False
        return path.is_file() or str(path) in _unsaved

    def load(self, media_path: str | os.PathLike,
             variant: str | None = None) -> dict[str, np.ndarray] | None:
        """The cached arrays, or None when missing or corrupt (a corrupt file is moved aside)
        or when the media file cannot be read."""
        try:
            path = self.path_for(media_path, variant)
        except OSError:
            return None
        if str(path) in _unsaved:
            return _unsaved[str(path)]
        if not path.is_file():
            return None
        try:
            arrays = read_npz(path, self.REQUIRED)
        except CacheError as exc:
            warnings.warn(f"{printable(exc)}; moved aside and will be extracted again",
                          stacklevel=2)
            with contextlib.suppress(OSError):
                os.replace(path, path.with_suffix(".corrupt"))
            return None
        if self._from_a_wrong_index_entry(media_path, arrays):
            return self.load(media_path, variant)  # under the file's own fingerprint
        return arrays

    def _from_a_wrong_index_entry(self, media_path: str | os.PathLike,
                                  arrays: Mapping[str, np.ndarray]) -> bool:
        """Whether ``arrays`` were found through an index entry that the media file's own
        sample contradicts; if so the entry is dropped and the file hashed here."""
        p = os.path.abspath(media_path)
        try:
            memo = _state(p)
            if memo not in _from_index or SOURCE not in arrays:
                return False  # hashed here, or a file written before samples were kept
            _from_index.discard(memo)
            if np.array_equal(arrays[SOURCE], source_sample(p)):
                return False
        except OSError:
            return False
        warnings.warn(f"{printable(p)}: the fingerprint index named another file's features "
                      f"for it ({_fingerprints[memo]}); the file was hashed again",
                      stacklevel=3)
        del _fingerprints[memo]
        content_fingerprint(p)  # no index: its own bytes
        return True

    def save(self, media_path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
             variant: str | None = None) -> Path:
        """Atomically write the arrays of one media file; returns the cache file.

        A cache that cannot be written (read-only, full, over quota) stops nothing: the
        arrays are kept in this process's memory instead, served by :meth:`load` and
        :meth:`has` as if cached (not on disk: they are extracted again by the next
        process), with one warning per cache folder naming it and the reason.
        """
        path = self.path_for(media_path, variant)
        arrays = {**arrays, SOURCE: source_sample(media_path)}
        try:
            self._ensure_dir()
            write_npz(path, arrays, self.dir / "tmp")
        except OSError as exc:
            _unsaved[str(path)] = {k: np.asarray(v) for k, v in arrays.items()}
            if str(self.dir) not in _warned:
                _warned.add(str(self.dir))
                warnings.warn(f"feature cache {printable(self.dir)} cannot be written "
                              f"({printable(exc.strerror or exc)}): features are kept in "
                              "memory for this process, not cached", stacklevel=2)
        return path

    def clear_stale(self, media_path: str | os.PathLike, variant: str | None = None) -> int:
        """Remove the temp files a killed writer left for one media file; the count removed.

        Call it holding the file's lock (no live writer then). Temp files live in
        ``<cache dir>/tmp/`` (only those in flight or left by killed jobs), so this lists a
        small folder, not the cache.
        """
        prefix = f".{self.path_for(media_path, variant).name}."
        removed = 0
        try:
            names = os.listdir(self.dir / "tmp")
        except OSError:
            return 0
        for name in names:
            if name.startswith(prefix) and name.endswith(".tmp"):
                with contextlib.suppress(OSError):  # gone, or a read-only cache
                    os.unlink(self.dir / "tmp" / name)
                    removed += 1
        return removed

    def _lock_path(self, media_path: str | os.PathLike) -> Path:
        self._ensure_dir()
        lock_dir = self.dir / "locks"
        lock_dir.mkdir(exist_ok=True)
        return lock_dir / self.path_for(media_path).with_suffix(".lock").name

    @contextlib.contextmanager
    def lock(self, media_path: str | os.PathLike) -> Iterator[None]:
        """Hold an exclusive advisory lock for one media file (blocks while another holds it)."""
        with self.try_lock(media_path, blocking=True) as got:
            assert got
            yield

    @contextlib.contextmanager
    def try_lock(self, media_path: str | os.PathLike, blocking: bool = False) -> Iterator[bool]:
        """Try to take the exclusive advisory lock of one media file without waiting.

        Parameters
        ----------
        media_path : path-like
            The media file (its lock file is under ``<cache dir>/locks/``).
        blocking : bool
            Wait for the lock instead (as :meth:`lock`).

        Yields
        ------
        bool
            True when this process holds the lock inside the block; False when another
            process holds it (nothing is held then: skip the file and come back later).
            True without a lock when the cache cannot hold a lock file (read-only or
            full): nothing is written to it then, so there is nothing to coordinate.

        Raises
        ------
        OSError
            The media file cannot be read (it cannot be fingerprinted).
        """
        self.path_for(media_path)  # the item's own error (unreadable) is raised, not hidden
        with contextlib.ExitStack() as stack:
            try:
                got = stack.enter_context(file_lock(self._lock_path(media_path),
                                                    blocking=blocking))
            except OSError:  # a read-only or full cache
                got = True
            yield got


#: Arrays a cache could not write (read-only, full), by cache file: served to this process
#: as if cached (:meth:`FeatureCache.save`).
_unsaved: dict[str, dict[str, np.ndarray]] = {}
#: Cache folders already warned about.
_warned: set[str] = set()
