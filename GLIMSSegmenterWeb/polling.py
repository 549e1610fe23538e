"""Drives the running engine job from the server's event loop, as the Slicer panel does from a QTimer.

``EngineJob.poll`` delivers progress and, at the end, imports the result into the scene; it runs here on the
event loop's thread (the one that owns the scene), never on another thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from GLIMSSegmenterLib.job import POLL_INTERVAL_S, JobState

__all__ = ["JobPoller"]

logger = logging.getLogger(__name__)


class JobPoller:
    """Polls one job until it has finished: ``whileRunning()`` after each poll, ``onFinished(job)`` once at the end,
    both inside a state flush (their changes reach the page together).

    Args:
        state: the trame state (changes made by the callbacks are sent to the page after each poll).
    """

    def __init__(self, state) -> None:
        self.state = state
        self._task: asyncio.Task | None = None  # held: the event loop keeps only a weak reference

    def follow(self, job, whileRunning: Callable[[], None], onFinished: Callable[[object], None]) -> None:
        """Poll ``job`` in the background until it has finished."""
        self._task = asyncio.get_event_loop().create_task(self._run(job, whileRunning, onFinished))

    async def _run(self, job, whileRunning: Callable[[], None], onFinished: Callable[[object], None]) -> None:
        while True:
            with self.state:
                try:
                    finished = job.poll()
                except Exception as err:  # a broken job must not stop the page: end it as failed
                    logger.exception("polling the engine job failed")
                    job.cancel()
                    job.errorMessage = f"the job stopped unexpectedly: {err}"
                    job.state = JobState.FAILED
                    finished = True
                try:
                    if finished:
                        onFinished(job)
                    else:
                        whileRunning()
                except Exception:
                    logger.exception("updating the page after a job poll failed")
            if finished:
                return
            await asyncio.sleep(POLL_INTERVAL_S)
