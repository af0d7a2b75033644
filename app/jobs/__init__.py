"""Long-running work (ingestion, template optimization, training) as typed jobs, persisted in SQLite."""

from app.jobs.manager import FINAL, Job, JobManager, Kind
from app.jobs.runner import JobRunner

__all__ = ["FINAL", "Job", "JobManager", "JobRunner", "Kind"]
