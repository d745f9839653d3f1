"""User reports on scored files: a small repository over one SQL table.

A report says what a person thinks of a file the model scored: ``"manipulated"``,
``"authentic"`` or ``"unsure"``, with an optional comment. It keeps the file's SHA-256 (never
its name or content), the model's score, verdict and version, and the UTC time::

    >>> store = ReportStore("sqlite:///reports.db")      # or "reports.db"
    >>> store.add(sha256=file_sha256("clip.mp4"), label="manipulated", score=0.93,
    ...           model_version=model.version, comment="lips out of sync")
    >>> store.list(label="manipulated")
    >>> store.export_csv("reports.csv")

The store is SQLAlchemy Core over a database URL: SQLite by default (a file, no server;
WAL journal and a busy timeout so that several processes can write to one file), PostgreSQL
by changing the URL (``postgresql+psycopg://user@host/db``, with a driver installed). The
statements are the same on both. SQLAlchemy (1.4.46+ or 2.x) comes with the ``app`` extra and
is imported when a store is created.
"""

from __future__ import annotations

import builtins
import csv
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from deepmetric.storage import atomic_file, file_sha256
from deepmetric.text import spreadsheet_cell

__all__ = ["LABELS", "MAX_COMMENT", "Report", "ReportStore", "file_sha256", "database_url"]

#: The labels a user can give.
LABELS = ("manipulated", "authentic", "unsure")
#: Longest comment accepted, in characters.
MAX_COMMENT = 2000
#: Columns of :meth:`ReportStore.export_csv`, in order.
COLUMNS = ("id", "created_at", "sha256", "label", "comment", "score", "verdict",
           "model_version")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Report:
    """One stored report.

    Attributes
    ----------
    id : int
    created_at : datetime.datetime
        Time of the report, timezone-aware UTC.
    sha256 : str
        Lower-case hex SHA-256 of the reported file.
    label : str
        One of :data:`LABELS`.
    comment : str or None
    score : float
        The model's P(fake) for the file.
    verdict : str or None
        The model's verdict ("real"/"fake") when it was recorded.
    model_version : str
        :attr:`deepmetric.model.DeepfakeModel.version` of the model that scored the file.
    """

    id: int
    created_at: datetime
    sha256: str
    label: str
    comment: str | None
    score: float
    verdict: str | None
    model_version: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


def database_url(db: str | os.PathLike) -> str:
    """A database URL from a URL (``dialect[+driver]://...``) or a plain SQLite file path."""
    s = str(db)
    if "://" in s:
        return s
    return f"sqlite:///{Path(s).expanduser().resolve()}"


class ReportStore:
    """Reports in one table (``reports``) of the database at ``url``.

    Parameters
    ----------
    url : str or path-like
        SQLAlchemy database URL, e.g. ``"sqlite:///reports.db"`` (relative to the working
        directory), ``"sqlite:////abs/reports.db"``, ``"postgresql+psycopg://u@h/db"``; a
        plain path means a SQLite file. The table is created when missing (and a SQLite
        file's folder too).
    busy_timeout : float
        SQLite: seconds a writer waits for another writer's lock before failing.
    """

    def __init__(self, url: str | os.PathLike = "sqlite:///reports.db",
                 busy_timeout: float = 30.0):
        import sqlalchemy as sa

        self.url = database_url(url)
        self.busy_timeout = busy_timeout
        u = sa.engine.make_url(self.url)
        kwargs: dict[str, Any] = {}
        self._sqlite = u.get_backend_name() == "sqlite"
        if self._sqlite:
            if u.database and u.database != ":memory:":
                Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": float(busy_timeout)}
        self.engine = sa.create_engine(self.url, **kwargs)
        if self._sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas(busy_timeout))
        self.table = _table(sa)
        self._create()

    def __repr__(self) -> str:
        return f"ReportStore({self.engine.url.render_as_string(hide_password=True)!r})"

    def _create(self) -> None:
        import sqlalchemy as sa

        try:
            self.table.metadata.create_all(self.engine, checkfirst=True)
        except sa.exc.OperationalError:
            # Another process created it between the check and the CREATE.
            if not sa.inspect(self.engine).has_table(self.table.name):
                raise

    def add(self, sha256: str, label: str, score: float, model_version: str,
            comment: str | None = None, verdict: str | None = None,
            created_at: datetime | None = None) -> Report:
        """Store one report and return it (with its id and time).

        Parameters
        ----------
        sha256 : str
            Hex SHA-256 of the file (see :func:`file_sha256`); 64 hex digits.
        label : str
            One of :data:`LABELS`.
        score : float
            The model's P(fake) in [0, 1].
        model_version : str
            The scoring model's version.
        comment : str, optional
            Free text, at most :data:`MAX_COMMENT` characters; blank means none.
        verdict : str, optional
            The model's verdict shown to the user.
        created_at : datetime.datetime, optional
            Default now; naive times are taken as UTC.

        Raises
        ------
        ValueError
            On a bad label, hash, score or comment (the message names the field).
        """
        sha = str(sha256).strip().lower()
        if not _SHA256.match(sha):
            raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        score = float(score)
        if not 0.0 <= score <= 1.0:  # also rejects NaN
            raise ValueError(f"score must be a probability in [0, 1], got {score!r}")
        comment = (comment or "").strip() or None
        if comment is not None and len(comment) > MAX_COMMENT:
            raise ValueError(f"comment is {len(comment)} characters long; the limit is "
                             f"{MAX_COMMENT}")
        if not str(model_version).strip():
            raise ValueError("model_version must not be empty")
        when = _utc(created_at or datetime.now(timezone.utc))
        row = {"created_at": when, "sha256": sha, "label": label, "comment": comment,
               "score": score, "verdict": verdict, "model_version": str(model_version)}
        with self.engine.begin() as conn:
            res = conn.execute(self.table.insert().values(**row))
            rid = int(res.inserted_primary_key[0])
        return Report(id=rid, **row)

    def list(self, label: str | None = None, sha256: str | None = None,
             limit: int | None = None, newest_first: bool = False) -> builtins.list[Report]:
        """Stored reports, oldest first (by id) unless ``newest_first``.

        Parameters
        ----------
        label, sha256 : str, optional
            Keep only reports with this label / for this file.
        limit : int, optional
            At most this many.
        """
        import sqlalchemy as sa

        t = self.table
        q = sa.select(t)
        if label is not None:
            q = q.where(t.c.label == label)
        if sha256 is not None:
            q = q.where(t.c.sha256 == str(sha256).lower())
        q = q.order_by(t.c.id.desc() if newest_first else t.c.id)
        if limit is not None:
            q = q.limit(int(limit))
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [Report(id=int(r["id"]), created_at=_utc(r["created_at"]), sha256=r["sha256"],
                       label=r["label"], comment=r["comment"], score=float(r["score"]),
                       verdict=r["verdict"], model_version=r["model_version"]) for r in rows]

    def count(self) -> int:
        """Number of stored reports."""
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.table))
                       .scalar_one())

    def export_csv(self, path: str | os.PathLike) -> int:
        """Write every report to a CSV file (columns :data:`COLUMNS`, oldest first).

        The file is written atomically. Times are ISO 8601 UTC. A comment that starts with
        ``= + - @`` (or a tab / carriage return) is prefixed with ``'`` so that spreadsheet
        programs do not run it as a formula.

        Returns
        -------
        int
            Rows written.
        """
        path = Path(path)
        reports = self.list()
        with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for r in reports:
                d = r.to_dict()
                d["comment"] = spreadsheet_cell(d["comment"])
                w.writerow(d)
        return len(reports)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def _table(sa):
    md = sa.MetaData()
    return sa.Table(
        "reports", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("verdict", sa.String(8), nullable=True),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.CheckConstraint("label IN ('manipulated', 'authentic', 'unsure')",
                           name="reports_label"),
    )


def _sqlite_pragmas(busy_timeout: float):
    """The connect hook of a SQLite store: WAL journal, ``synchronous=NORMAL``.

    Switching a database to WAL takes an exclusive lock, and when several processes open a
    new database at once SQLite can answer "database is locked" at once, without waiting
    for the busy timeout (it refuses to wait where waiting could deadlock). The switch is
    therefore retried, with backoff, for up to ``busy_timeout`` seconds.
    """
    import sqlite3
    import time

    def on_connect(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        try:
            deadline, delay = time.monotonic() + busy_timeout, 0.01
            while True:
                try:
                    cur.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise
                    time.sleep(delay)
                    delay = min(2 * delay, 0.25)
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    return on_connect


def _utc(t: datetime) -> datetime:
    """Timezone-aware UTC (SQLite gives naive times back: they were stored as UTC)."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
