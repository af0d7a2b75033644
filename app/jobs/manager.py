"""Jobs: kind, status, progress, events and results, persisted so they survive a restart.

A job's state lives in memory while it runs and is written to ``<data_dir>/jobs.sqlite`` on every
change of status and at most every half second of progress. Jobs that were queued or running when
the service stopped are marked ``interrupted`` at the next start: their work must be resubmitted
(documents already acknowledged stay ingested; re-submitting skips them as unchanged).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)
Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
Kind = Literal["ingest", "optimize", "train"]
FINAL: tuple[str, ...] = ("succeeded", "failed", "cancelled", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    domain TEXT,
    status TEXT NOT NULL,
    progress TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS job_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job_id, seq);
"""


@dataclass
class Job:
    id: str
    kind: Kind
    domain: str | None
    status: Status = "queued"
    progress: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


class JobManager:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # progress writes come often and some from the event loop: WAL without an fsync per
        # commit survives a crash of the service (not of the machine), which is what jobs need
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._live: dict[str, Job] = {}
        self._last_write: dict[str, float] = {}
        now = time.time()
        self._db.execute(
            "UPDATE jobs SET status = 'interrupted', error = 'the service stopped before the job finished',"
            " updated_at = ? WHERE status IN ('queued', 'running')",
            (now,),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, job: Job) -> bool:
        """Persist ``job``; False (logged) when SQLite cannot write, e.g. on a full disk.

        The job's state is then still served from memory, and written with its next change.
        """
        try:
            self._write_row(job)
        except sqlite3.Error as exc:
            log.warning("job %s not persisted: %s", job.id, exc)
            return False
        self._last_write[job.id] = time.monotonic()
        return True

    def _write_row(self, job: Job) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO jobs (id, kind, domain, status, progress, result, error, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (
                job.id,
                job.kind,
                job.domain,
                job.status,
                json.dumps(job.progress),
                None if job.result is None else json.dumps(job.result),
                job.error,
                job.created_at,
                job.updated_at,
            ),
        )

    def create(
        self,
        kind: Kind,
        domain: str | None,
        progress: dict[str, Any] | None = None,
        *,
        job_id: str | None = None,
        result: Any = None,
    ) -> Job:
        job = Job(
            id=job_id or f"job-{uuid.uuid4().hex}",
            kind=kind,
            domain=domain,
            progress=progress or {},
            result=result,
        )
        with self._lock:
            self._live[job.id] = job
            self._write(job)
        return job

    def update(self, job: Job, *, force: bool = False, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)
            job.updated_at = time.time()
            written = False
            if force or "status" in changes or time.monotonic() - self._last_write.get(job.id, 0) > 0.5:
                written = self._write(job)
            if written and job.status in FINAL:
                self._live.pop(job.id, None)  # from now on read from SQLite
                self._last_write.pop(job.id, None)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            if job_id in self._live:
                live = self._live[job_id]
                return Job(**{**asdict(live), "progress": dict(live.progress)})
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        data = dict(row)
        data["progress"] = json.loads(data["progress"])
        data["result"] = json.loads(data["result"]) if data["result"] else None
        return Job(**data)

    def list(self, kind: Kind, *, after: str | None = None, limit: int = 20) -> list[Job]:
        """Jobs of ``kind``, newest first, starting after the job ``after`` (OpenAI's pagination)."""
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM jobs WHERE kind = ? ORDER BY created_at DESC, id DESC", (kind,)
                )
            ]
        if after is not None:
            ids = ids[ids.index(after) + 1 :] if after in ids else []
        return [j for j in (self.get(i) for i in ids[:limit]) if j is not None]

    def add_event(self, job_id: str, message: str, *, level: str = "info", data: dict | None = None) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO job_events (job_id, created_at, level, message, data) VALUES (?,?,?,?,?)",
                    (job_id, time.time(), level, message, None if data is None else json.dumps(data)),
                )
            except sqlite3.Error as exc:
                log.warning("event of job %s not persisted: %s", job_id, exc)

    def events(self, job_id: str, *, after: int | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Events newest first (as OpenAI lists them); ``after`` is an event's sequence number."""
        query = "SELECT * FROM job_events WHERE job_id = ?"
        args: list[Any] = [job_id]
        if after is not None:
            query += " AND seq < ?"
            args.append(after)
        query += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [{**dict(r), "data": json.loads(r["data"]) if r["data"] else None} for r in rows]
