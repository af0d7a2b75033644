"""Run jobs as tracked asyncio tasks, so none dies silently and shutdown cancels them cleanly.

Routes hand the runner a coroutine; the runner marks the job running, records success, a failure
(with its message) or a cancellation, and keeps the task referenced until it ends. At shutdown
every running job is cancelled and recorded as ``interrupted`` (training jobs also stop their
trainer process, in their own ``finally``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.jobs.manager import Job, JobManager

log = logging.getLogger(__name__)

#: Turns an exception into the job's error message (a kind may explain its own failures).
Describe = Callable[[BaseException], str]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class JobRunner:
    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs
        self._tasks: dict[str, asyncio.Task] = {}
        self._closing = False

    def start(
        self,
        job: Job,
        work: Callable[[], Awaitable[dict[str, Any] | None]],
        describe: Describe = _describe,
        *,
        starts_running: bool = True,
    ) -> None:
        """Run ``work`` for ``job``: its return value is merged into the job's result.

        With ``starts_running=False`` the job stays ``queued`` until ``work`` marks it running
        (work that waits for its turn, like training).
        """

        async def run() -> None:
            if starts_running:
                self.jobs.update(job, status="running")
            try:
                result = await work()
            except asyncio.CancelledError:
                status = "interrupted" if self._closing else "cancelled"
                error = "the service stopped before the job finished" if self._closing else None
                self.jobs.update(job, status=status, error=error, force=True)
                raise
            except Exception as exc:  # noqa: BLE001 - recorded on the job
                log.exception("%s job %s failed", job.kind, job.id)
                self.jobs.update(job, status="failed", error=describe(exc), force=True)
                return
            if result is not None:
                self.jobs.update(job, result={**(job.result or {}), **result})
            self.jobs.update(job, status="succeeded", force=True)

        task = asyncio.create_task(run(), name=f"job-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))

    def running(self, job_id: str) -> bool:
        return job_id in self._tasks

    async def cancel(self, job_id: str) -> bool:
        """Cancel a running job and wait for it to stop; False when it was not running."""
        task = self._tasks.get(job_id)
        if task is None:
            return False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return True

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
