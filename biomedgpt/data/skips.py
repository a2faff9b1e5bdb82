"""Skipped items, counted: a shard member that does not read, a sample that does not decode or format, a target
over its budget. The pipeline logs each (the first ones of a kind, then every 1000th) and goes on, so an epoch
always finishes; `SkipCounter.counts()` sums them over the main process and its DataLoader workers.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

from torch.utils.data import get_worker_info

log = logging.getLogger(__name__)

SKIP_KINDS = ("tar", "sample", "format", "too_long", "unavailable")
"""tar: unreadable member or truncated/missing tar; sample: a group that does not decode; format: a
sample the task cannot format; too_long: a structured target over max_target_tokens; unavailable:
the task's component (image VQ, mask codec) is not installed."""
_COUNTER_ROWS = 65  # row 0: the main process; rows 1..64: DataLoader workers (id % 64)
# Per kind and process, every skip is logged at WARNING up to this many, then every 1000th; a missing
# component makes every sample of its task fail the same way, so that kind is said once.
_LOG_FIRST = {"unavailable": 1}
_LOG_FIRST_DEFAULT = 20


class SkipCounter:
    """Skipped items per kind, summed over the main process and its DataLoader workers.

    Lives in shared memory (one row per process, so no lock is needed): counts made in worker
    processes show up in the main process. A copy pickled outside process start-up (deepcopy, Ray)
    gets its own counts.
    """

    def __init__(self) -> None:
        self._counts = multiprocessing.RawArray("q", _COUNTER_ROWS * len(SKIP_KINDS))
        self._logged: dict[str, int] = {}

    def add(self, kind: str, message: str) -> None:
        """Count one skip of `kind` and log it (the first ones of each kind, then every 1000th)."""
        index = SKIP_KINDS.index(kind)
        info = get_worker_info()
        row = 0 if info is None else 1 + info.id % (_COUNTER_ROWS - 1)
        self._counts[row * len(SKIP_KINDS) + index] += 1
        seen = self._logged[kind] = self._logged.get(kind, 0) + 1
        if seen <= _LOG_FIRST.get(kind, _LOG_FIRST_DEFAULT) or seen % 1000 == 0:
            log.warning("skipped (%s, #%d in this process): %s", kind, seen, message)

    def counts(self) -> dict[str, int]:
        """{kind: count} over every process, all kinds listed."""
        width = len(SKIP_KINDS)
        values = list(self._counts)
        return {
            kind: sum(values[r * width + i] for r in range(_COUNTER_ROWS))
            for i, kind in enumerate(SKIP_KINDS)
        }

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def __getstate__(self) -> dict[str, Any]:
        if multiprocessing.context.get_spawning_popen() is not None:
            return {"counts": self._counts}  # starting a worker: share the memory
        return {"snapshot": list(self._counts)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._logged = {}
        if "counts" in state:
            self._counts = state["counts"]
        else:
            self._counts = multiprocessing.RawArray("q", state["snapshot"])


class SkipHandler:
    """A webdataset exception handler: log, count as `kind`, continue."""

    def __init__(self, counter: SkipCounter, kind: str) -> None:
        self.counter, self.kind = counter, kind

    def __call__(self, exn: BaseException) -> bool:
        self.counter.add(self.kind, f"{type(exn).__name__}: {exn}")
        return True


__all__ = ["SKIP_KINDS", "SkipCounter", "SkipHandler"]
