"""The page's password check: compared in constant time, throttled after failures.

Without Streamlit, so the rules are tested with a fake clock. :class:`PasswordThrottle` counts
wrong passwords per browser session and for the whole process: a script that opens a new
session for every guess meets the process-wide limit. One instance serves every session of a
process (the page keeps it with ``st.cache_resource``), so it is safe to use from several threads.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

GLOBAL = ""  # the key of the process-wide count; session keys are never empty


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    """``failures`` wrong passwords within ``window_s`` lock the key for ``lockout_s``; each
    lockout while the last one is remembered (within ``window_s`` of its end) doubles the next,
    up to ``max_lockout_s``."""

    failures: int
    window_s: float
    lockout_s: float
    max_lockout_s: float


SESSION_RULE = ThrottleRule(failures=5, window_s=300.0, lockout_s=30.0, max_lockout_s=900.0)
# Several people may mistype at once; many more failures than that in a window is a script.
PROCESS_RULE = ThrottleRule(failures=20, window_s=300.0, lockout_s=60.0, max_lockout_s=900.0)


@dataclass(slots=True)
class _Record:
    failures: list[float]  # times of the failures within the window
    locked_until: float = 0.0
    lockouts: int = 0  # consecutive lockouts, for the growing delay


class PasswordThrottle:
    """Failure counts per session key and for the process (key :data:`GLOBAL`)."""

    def __init__(
        self,
        session_rule: ThrottleRule = SESSION_RULE,
        process_rule: ThrottleRule = PROCESS_RULE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rules = {"session": session_rule, "process": process_rule}
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def retry_after(self, session: str) -> float:
        """Seconds until ``session`` may try again (the longer of its own lock and the
        process's); 0.0 when it may try now."""
        now = self._clock()
        with self._lock:
            return max(
                self._wait(self._records.get(session), now),
                self._wait(self._records.get(GLOBAL), now),
            )

    def failed(self, session: str) -> None:
        """Count a wrong password for ``session`` and for the process."""
        assert session != GLOBAL, "a session key is never empty"
        now = self._clock()
        with self._lock:
            self._fail(session, self._rules["session"], now)
            self._fail(GLOBAL, self._rules["process"], now)
            self._forget_stale(now)

    def succeeded(self, session: str) -> None:
        """Forget ``session``'s failures. The process's count stays: someone else's right
        password says nothing about the guesses."""
        with self._lock:
            self._records.pop(session, None)

    def tracked_sessions(self) -> int:
        """How many sessions have failures remembered (stale ones are forgotten)."""
        with self._lock:
            return sum(1 for key in self._records if key != GLOBAL)

    @staticmethod
    def _wait(record: _Record | None, now: float) -> float:
        return max(0.0, record.locked_until - now) if record is not None else 0.0

    def _fail(self, key: str, rule: ThrottleRule, now: float) -> None:
        record = self._records.setdefault(key, _Record(failures=[]))
        if record.lockouts and now > record.locked_until + rule.window_s:
            record.lockouts = 0  # quiet for a whole window since the last lockout: start over
        record.failures = [t for t in record.failures if now - t < rule.window_s]
        record.failures.append(now)
        if len(record.failures) >= rule.failures:
            delay = min(rule.lockout_s * 2**record.lockouts, rule.max_lockout_s)
            record.locked_until = now + delay
            record.lockouts += 1
            record.failures = []

    def _forget_stale(self, now: float) -> None:
        """Drop sessions with nothing left to remember, so opening sessions costs no memory."""
        rule = self._rules["session"]
        stale = [
            key
            for key, record in self._records.items()
            if key != GLOBAL
            and now > record.locked_until + rule.window_s
            and all(now - t >= rule.window_s for t in record.failures)
        ]
        for key in stale:
            del self._records[key]


Outcome = Literal["accepted", "wrong", "throttled"]


def check_password(given: str, secret: str, throttle: PasswordThrottle, session: str) -> Outcome:
    """Compare ``given`` with ``secret`` in constant time (:func:`hmac.compare_digest`), unless
    ``session`` (or the process) is locked out; count the outcome with ``throttle``."""
    if throttle.retry_after(session) > 0:
        return "throttled"
    if hmac.compare_digest(given.encode(), secret.encode()):
        throttle.succeeded(session)
        return "accepted"
    throttle.failed(session)
    return "wrong"
