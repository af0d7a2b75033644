"""Long-running work (ingestion now, training later) as jobs with progress, persisted in SQLite."""

from app.jobs.manager import Job, JobManager

__all__ = ["Job", "JobManager"]
