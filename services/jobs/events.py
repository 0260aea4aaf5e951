"""Job change events over Redis pub/sub.

Every state change is published on the job's channel (`<prefix>:job:<id>`) and,
when a job becomes QUEUED, on the queue channel (`<prefix>:queue`), so watchers
and idle LeaseJob calls on any replica react at once instead of polling.

One subscriber thread per process listens to both (a pattern subscription for
the job channels) and wakes the local waiters registered for that key. Events
only say "look again": waiters re-read PostgreSQL, which stays the truth, so a
lost event costs latency, never correctness. Waiters also re-check on a slow
timer, faster while Redis is unreachable.

A Redis outage never fails a database write: publishing logs, counts the
failure and, for a second, skips further attempts so requests are not slowed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import redis

from services.jobs.metrics import JobsMetrics

log = logging.getLogger(__name__)

QUEUE = "queue"
# How long publishing is skipped after a failure.
_PUBLISH_BACKOFF_SECONDS = 1.0


def _keepalive(redis_url: str) -> dict[str, bool]:
    """TCP keepalive for the long-lived subscriber, so a silently dropped connection is noticed. Not
    for a unix:// URL: redis-py's Unix socket connection refuses the option (a TypeError on connect)."""
    return {} if urlsplit(redis_url).scheme == "unix" else {"socket_keepalive": True}


class Waiter:
    """A wake-up flag for one waiting RPC."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def clear(self) -> None:
        self._event.clear()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """True when woken (an event arrived or the bus asks for a re-check), False on timeout."""
        return self._event.wait(max(timeout, 0.0))


class JobEvents:
    def __init__(self, redis_url: str, metrics: JobsMetrics, *, prefix: str = "pdfsmaller:jobs") -> None:
        self._metrics = metrics
        self._prefix = prefix
        self._job_prefix = f"{prefix}:job:"
        self._queue_channel = f"{prefix}:queue"
        # Short timeouts: publishing happens on request threads, right after a commit.
        self._publisher = redis.Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self._subscriber = redis.Redis.from_url(
            redis_url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=5, **_keepalive(redis_url)
        )
        self._waiters: dict[str, set[Waiter]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._publish_paused_until = 0.0
        self._thread = threading.Thread(target=self._run, name="job-events", daemon=True)

    # --- publishing ------------------------------------------------------

    def job_changed(self, job_id: str, state: str, *, queued: bool = False) -> None:
        """Announce a change of `job_id` (and wake idle workers when it became QUEUED)."""
        self._publish(self._job_prefix + job_id, state)
        if queued:
            self._publish(self._queue_channel, job_id)

    def queue_changed(self, why: str) -> None:
        """Wake idle workers although no job changed (the queue resumed, a drain was undone)."""
        self._publish(self._queue_channel, why)

    def _publish(self, channel: str, payload: str) -> None:
        if time.monotonic() < self._publish_paused_until:
            self._metrics.event_publish_failures.inc()
            return
        try:
            self._publisher.publish(channel, payload)
        except (redis.RedisError, OSError):
            self._publish_paused_until = time.monotonic() + _PUBLISH_BACKOFF_SECONDS
            self._metrics.event_publish_failures.inc()
            log.warning("cannot publish job event on %s; Redis unavailable", channel, exc_info=True)

    # --- waiting ---------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """The subscriber is connected, so events arrive as they happen."""
        return self._subscribed.is_set()

    @contextlib.contextmanager
    def waiter(self, key: str) -> Iterator[Waiter]:
        """A waiter woken by events for `key` (a job id, or QUEUE) while the block runs."""
        waiter = Waiter()
        with self._lock:
            self._waiters.setdefault(key, set()).add(waiter)
        try:
            yield waiter
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[key]

    def _wake(self, key: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(key, ()))
        for waiter in waiters:
            waiter.wake()

    def wake_all(self) -> None:
        """Make every waiter re-check (events may have been missed, or the server is stopping)."""
        with self._lock:
            waiters = [waiter for group in self._waiters.values() for waiter in group]
        for waiter in waiters:
            waiter.wake()

    # --- subscriber thread -----------------------------------------------

    def start(self, wait_seconds: float = 2.0) -> None:
        """Start the subscriber; waits briefly for the subscription so early events are not missed."""
        self._thread.start()
        if not self._subscribed.wait(wait_seconds):
            log.warning("Redis subscription not ready yet; job events will be late until it is")

    def close(self) -> None:
        self._stopping.set()
        self.wake_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._publisher.close()
        self._subscriber.close()

    def _run(self) -> None:
        backoff = 0.2
        reported = False  # an unexpected failure is logged with its traceback once per streak
        while not self._stopping.is_set():
            pubsub = self._subscriber.pubsub()  # no connection yet: that is made by the first subscribe
            try:
                pubsub.psubscribe(self._job_prefix + "*")
                pubsub.subscribe(self._queue_channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=0.25)
                    if message is not None:
                        self._handle(message)
                        backoff = 0.2
            except Exception as error:  # the thread must outlive any failure: it is the only subscriber
                if self._subscribed.is_set():
                    reported = False
                if not isinstance(error, (redis.RedisError, OSError)):
                    # Not an outage: a bug or a client misconfiguration. Logged once with its traceback, retried.
                    if not reported:
                        log.error("job events subscriber failed; retrying with a backoff", exc_info=True)
                    reported = True
                elif self._subscribed.is_set():
                    log.warning("lost the Redis subscription; watchers re-read periodically until it is back")
                self._subscribed.clear()
                self.wake_all()
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def _handle(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        if kind in ("subscribe", "psubscribe"):
            if not self._subscribed.is_set() and kind == "subscribe":
                self._subscribed.set()
                # Redis is back: publish again right away instead of waiting out the backoff.
                self._publish_paused_until = 0.0
                log.info("subscribed to job events")
                # Anything published while we were not subscribed was missed: everyone re-checks.
                self.wake_all()
            return
        if kind not in ("message", "pmessage"):
            return
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if not isinstance(channel, str):
            return
        if channel == self._queue_channel:
            self._wake(QUEUE)
        elif channel.startswith(self._job_prefix):
            self._wake(channel[len(self._job_prefix) :])
