"""Toxicity scoring of generated text, off the request path.

A bounded queue feeds one worker thread that scores in batches with
alt-profanity-check (a calibrated linear model, ~1 ms a sentence, far less in
a batch). A response never waits for its score: when the queue is full the
output is skipped and counted, so scoring cannot slow serving down. (Offline
evaluation scores with `excise.evaluation.toxicity`'s scorers: same classifier,
no queue; that module brings the generation code with it, so the server keeps its
own light worker.)
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_BATCH = 64
Sink = Callable[[float], None]


@dataclass(frozen=True)
class _Job:
    text: str
    sink: Sink


_STOP = object()


class LiveToxicityScorer:
    """Scores served outputs in the background; `score_now` for the texts the UI asks about."""

    def __init__(self, queue_size: int, on_skip: Callable[[], None]) -> None:
        from profanity_check import predict_prob  # imported here: loads a 1 s scikit-learn model

        self._predict = predict_prob
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._on_skip = on_skip
        self._thread = threading.Thread(target=self._run, name="toxicity-scorer", daemon=True)
        self._thread.start()

    def submit(self, text: str, sink: Sink) -> bool:
        """Queue `text`; `sink(score)` runs on the worker thread. False if skipped."""
        try:
            self._queue.put_nowait(_Job(text, sink))
        except queue.Full:
            self._on_skip()
            return False
        return True

    def score_now(self, texts: list[str]) -> list[float]:
        return [float(p) for p in self._predict(texts)]

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued, then stop the worker."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("toxicity queue still full at shutdown; unscored outputs dropped")
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(job is _STOP for job in batch)
            jobs = [job for job in batch if job is not _STOP]
            if jobs:
                self._score(jobs)
            if stop:
                return

    def _score(self, jobs: list[_Job]) -> None:
        try:
            scores = self._predict([job.text for job in jobs])
        except Exception:  # a scoring failure must never take the server down
            log.exception("toxicity scoring failed for a batch of %d outputs", len(jobs))
            for _ in jobs:  # unscored is unscored, whether the queue was full or the scorer failed
                self._on_skip()
            return
        for job, score in zip(jobs, scores, strict=True):
            try:
                job.sink(float(score))
            except Exception:
                log.exception("recording a toxicity score failed")
