"""Where deepmetric keeps files, and how it names a file's content."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_file", "atomic_write", "cache_root", "data_root", "file_lock", "file_sha256"]


def cache_root() -> Path:
    """The root of every cache (converted weights, demo data, features).

    Returns
    -------
    pathlib.Path
        ``$DEEPMETRIC_CACHE`` (``~`` expanded) when set and not empty, else
        ``~/.cache/deepmetric``. Not created here.
    """
    env = os.environ.get("DEEPMETRIC_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepmetric"


def data_root() -> Path:
    """Where deepmetric keeps data a user makes (the web app's report database).

    Returns
    -------
    pathlib.Path
        ``$DEEPMETRIC_DATA`` (``~`` expanded) when set and not empty, else
        ``$XDG_DATA_HOME/deepmetric`` (default ``~/.local/share/deepmetric``). Not created
        here.
    """
    env = os.environ.get("DEEPMETRIC_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "deepmetric"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Lower-case hex SHA-256 of a file's bytes (read in ``chunk``-byte blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock (``fcntl.flock``) on ``lock_path`` inside the block.

    The lock dies with its process (killed, timed out): there is never a stale lock to
    clean up. The lock file is created when missing and left in place.

    Parameters
    ----------
    lock_path : path-like
        The lock file; its folder must exist.
    blocking : bool, default True
        Wait for the lock; with False, give up at once when another process holds it.

    Yields
    ------
    bool
        True when this process holds the lock inside the block; False (``blocking=False``
        only) when another process holds it, and nothing is held.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: callers' atomic renames still keep files whole
        yield True
        return
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_file(out: str | os.PathLike, tmp_dir: str | os.PathLike | None = None
                ) -> Iterator[Path]:
    """A temporary path beside ``out`` that takes ``out``'s name when the block succeeds.

    Write the file at the yielded path (and check it, if need be) inside the block. On
    success it is made readable like any other cache file (0644, where ``mkstemp`` gives
    0600) and renamed onto ``out`` atomically (``os.replace``), so no reader ever sees a
    partial file; on any exception it is removed and ``out`` is left as it was.

    Parameters
    ----------
    out : path-like
        The final file; its folder is created when missing.
    tmp_dir : path-like, optional
        Where the temporary file goes (default: ``out``'s folder). It must be on the same
        file system as ``out``. The temporary file is named ``.<out name>.<random>.tmp``.

    Yields
    ------
    pathlib.Path
        The temporary file to write (it exists, empty).

    Raises
    ------
    OSError
        The file could not be written (a full disk, a file-size limit, a read-only
        folder, ...): the same error, its message naming ``out`` (``"<out>: not written
        (<reason>)"``). Errors that carry no ``errno`` pass unchanged.
    """
    import tempfile

    out = Path(out)
    where = out.parent if tmp_dir is None else Path(tmp_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=where)
        os.close(fd)
    except OSError as exc:
        _raise_named(out, exc)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except OSError as exc:
        _raise_named(out, exc)
    finally:
        with contextlib.suppress(OSError):
            Path(tmp).unlink(missing_ok=True)


def atomic_write(out: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``out`` atomically (see :func:`atomic_file`).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    OSError
        The file could not be written; the message names it, and ``out`` is as it was.
    """
    with atomic_file(out) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding=encoding)
    return Path(out)


def _raise_named(out: Path, exc: OSError) -> None:
    """Raise ``exc`` with a message naming ``out`` (its errno kept, so its subclass too);
    unchanged when it has no errno or names ``out`` already."""
    if exc.errno is None or str(out) in str(exc):
        raise exc
    raise OSError(exc.errno, f"{out}: not written ({exc.strerror or exc})") from exc
