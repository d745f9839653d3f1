"""The report store: insert, list, export, validation, and concurrent writers on one file."""

from __future__ import annotations

import csv
import multiprocessing as mp
import threading
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

pytestmark = pytest.mark.slow  # the app's report store in real runs

pytest.importorskip("sqlalchemy")

from experiments.reports import (COLUMNS, LABELS, ReportStore, database_url,  # noqa: E402
                                file_sha256)

SHA = "ab" * 32


def test_add_list_and_export(tmp_path, faces_dir):
    img = faces_dir / "test_images" / "paul_rudd" / "1.jpg"
    sha = file_sha256(img)
    import hashlib

    assert sha == hashlib.sha256(img.read_bytes()).hexdigest()
    store = ReportStore(f"sqlite:///{tmp_path / 'sub' / 'reports.db'}")
    assert store.count() == 0 and store.list() == []
    t0 = datetime.now(timezone.utc)
    r1 = store.add(sha, "manipulated", 0.91, "triplet_rf-20250101", comment="  lips  ",
                   verdict="fake")
    r2 = store.add(SHA.upper(), "authentic", 0.12, "v2")
    r3 = store.add(sha, "unsure", 0.5, "v2", comment="=HYPERLINK(\"x\")",
                   created_at=datetime(2024, 5, 1, 12, 0))          # naive = UTC
    assert (r1.id, r2.id, r3.id) == (1, 2, 3)
    assert r1.comment == "lips" and r2.comment is None and r2.sha256 == SHA
    assert t0 - timedelta(seconds=1) <= r1.created_at <= datetime.now(timezone.utc)
    rows = store.list()
    assert [r.id for r in rows] == [1, 2, 3]
    assert rows[0] == r1 and rows[0].created_at.tzinfo is not None
    assert rows[2].created_at == datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert [r.id for r in store.list(sha256=sha)] == [1, 3]
    assert [r.id for r in store.list(label="authentic")] == [2]
    assert [r.id for r in store.list(newest_first=True, limit=2)] == [3, 2]

    # a second store on the same file sees the same rows (persistence)
    again = ReportStore(tmp_path / "sub" / "reports.db")
    assert again.count() == 3

    out = tmp_path / "exports" / "reports.csv"
    assert store.export_csv(out) == 3
    with open(out, newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert tuple(got[0]) == COLUMNS
    assert got[0]["sha256"] == sha and got[0]["label"] == "manipulated"
    assert float(got[0]["score"]) == pytest.approx(0.91)
    assert got[0]["model_version"] == "triplet_rf-20250101" and got[0]["verdict"] == "fake"
    assert got[1]["comment"] == "" and got[0]["created_at"].endswith("+00:00")
    assert got[2]["comment"] == "'=HYPERLINK(\"x\")"      # no formula for spreadsheets
    assert not list(out.parent.glob(".*.tmp"))


@pytest.mark.parametrize("kwargs, match", [
    ({"label": "fake"}, "label must be one of"),
    ({"sha256": "xyz"}, "sha256 must be 64 hex"),
    ({"score": 1.5}, "score must be a probability"),
    ({"score": float("nan")}, "score must be a probability"),
    ({"comment": "x" * 2001}, "comment is 2001 characters"),
    ({"model_version": " "}, "model_version"),
])
def test_bad_reports_are_refused(tmp_path, kwargs, match):
    store = ReportStore(tmp_path / "r.db")
    args = {"sha256": SHA, "label": "unsure", "score": 0.5, "model_version": "v"} | kwargs
    with pytest.raises(ValueError, match=match):
        store.add(**args)
    assert store.count() == 0


def test_the_database_itself_refuses_unknown_labels(tmp_path):
    import sqlalchemy as sa

    store = ReportStore(tmp_path / "r.db")
    with pytest.raises(sa.exc.IntegrityError):
        with store.engine.begin() as conn:
            conn.execute(store.table.insert().values(
                created_at=datetime.now(timezone.utc), sha256=SHA, label="lol", score=0.1,
                model_version="v"))


def test_urls():
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
    assert database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("rel/x.db").startswith("sqlite:////") and \
        database_url("rel/x.db").endswith("/rel/x.db")
    assert LABELS == ("manipulated", "authentic", "unsure")


def test_the_same_statements_compile_for_postgresql():
    """PostgreSQL is a URL change: the table and queries compile for its dialect."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateTable

    from experiments.reports import _table

    t = _table(sa)
    ddl = str(CreateTable(t).compile(dialect=postgresql.dialect()))
    assert "SERIAL" in ddl and "TIMESTAMP WITH TIME ZONE" in ddl and "reports_label" in ddl
    q = sa.select(t).where(t.c.sha256 == SHA).order_by(t.c.id.desc()).limit(3)
    assert "LIMIT" in str(q.compile(dialect=postgresql.dialect()))


def _writer(url: str, worker: int, n: int) -> list[int]:
    store = ReportStore(url)
    ids = [store.add(f"{worker:02x}" * 32, LABELS[i % 3], i / n, f"w{worker}",
                     comment=f"{worker}-{i}").id for i in range(n)]
    store.close()
    return ids


def test_processes_opening_a_new_database_at_once_all_get_in(tmp_path):
    """Six processes open the same new database at the same moment, 60 times over: switching
    it to WAL can be refused at once ("database is locked") without the busy timeout being
    honoured; the store retries the switch, so every process gets in. (Before the retry,
    about one round in 50 lost a process here.)"""
    with ProcessPoolExecutor(6, mp_context=mp.get_context("spawn")) as pool:
        for r in range(60):
            url = f"sqlite:///{tmp_path / f'new-{r}.db'}"
            ids = [i for f in [pool.submit(_writer, url, w, 1) for w in range(6)]
                   for i in f.result(timeout=120)]
            assert sorted(ids) == list(range(1, 7)), (r, ids)


def test_concurrent_writers_processes_and_threads(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    n = 25
    # four processes, each opening its own store (and creating the table if needed)
    with ProcessPoolExecutor(4, mp_context=mp.get_context("spawn")) as pool:
        ids = [i for f in [pool.submit(_writer, url, w, n) for w in range(4)]
               for i in f.result(timeout=120)]
    # and four threads sharing one store
    store = ReportStore(url)
    errors: list[BaseException] = []

    def work(w):
        try:
            for i in range(n):
                ids.append(store.add(SHA, "unsure", 0.5, f"t{w}", comment=f"t{w}-{i}").id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    rows = store.list()
    assert len(rows) == store.count() == 8 * n == len(ids) == len(set(ids))
    assert sorted(r.id for r in rows) == sorted(ids)
    comments = {r.comment for r in rows}
    assert {f"{w}-{i}" for w in range(4) for i in range(n)} <= comments
    assert {f"t{w}-{i}" for w in range(4) for i in range(n)} <= comments
