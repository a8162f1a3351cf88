"""Prometheus metrics of the jobs, and the /metrics, /healthz and /readyz endpoints of a service.

The metrics live in this module's own registry (not prometheus_client's global one), so what is
served is exactly what the bot counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

    from bot.models import ImageRequest, Requester

logger = logging.getLogger("bot.metrics")

REGISTRY = CollectorRegistry()

# A job takes seconds to minutes (a high-quality edit with previews can take two).
_JOB_BUCKETS = (1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600)

JOBS_STARTED = Counter(
    "imagine_jobs_started",
    "Jobs admitted (a job record was made), by platform and kind (generate or edit).",
    ["platform", "kind"],
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "imagine_jobs_finished",
    "Requests that ended, by outcome: succeeded, failed, refused (never admitted), cancelled "
    "(by a person) or interrupted (the process stopped).",
    ["platform", "kind", "outcome"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "imagine_job_duration_seconds",
    "Seconds from admission to the end of a job, whatever its outcome.",
    ["platform", "kind"],
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "imagine_provider_latency_seconds",
    "Seconds one image call to the provider took (retries included), whether or not it worked.",
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "imagine_queue_depth",
    "Admitted jobs waiting for a provider slot.",
    registry=REGISTRY,
)
PROVIDER_IN_FLIGHT = Gauge(
    "imagine_provider_calls_in_flight",
    "Image calls to the provider on the wire now.",
    registry=REGISTRY,
)
SPENT_DOLLARS = Counter(
    "imagine_spent_dollars",
    "US dollars billed for finished jobs (images and prompt rewrites), by platform and team.",
    ["platform", "team"],
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "imagine_provider_errors",
    "Failed image calls, by error class (and HTTP status or code when the error has one).",
    ["error"],
    registry=REGISTRY,
)

PLATFORM_API_ERRORS = Counter(
    "imagine_platform_api_errors",
    "Failed calls to a chat platform's API (Discord REST, Slack Web API), by platform, method "
    "and error.",
    ["platform", "method", "error"],
    registry=REGISTRY,
)
RATE_LIMIT_WAITS = Counter(
    "imagine_rate_limit_waits",
    "Times the bot waited before a platform call because of a rate limit (a 429 answered with "
    "Retry-After, or its own pacing of a rate tier), by platform and method.",
    ["platform", "method"],
    registry=REGISTRY,
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "imagine_rate_limit_wait_seconds",
    "Seconds spent waiting on platform rate limits, by platform.",
    ["platform"],
    registry=REGISTRY,
)
PROMPT_HELP_CALLS = Counter(
    "imagine_prompt_help_calls",
    "Calls to the chat model that rewrites or rephrases prompts, by outcome (ok or the error).",
    ["outcome"],
    registry=REGISTRY,
)
SLOT_WAITS = Counter(
    "imagine_shared_slot_waits",
    "Times a job waited for a provider slot held by another instance (IMAGINE_DATABASE_URL).",
    registry=REGISTRY,
)

OUTCOMES = ("succeeded", "failed", "refused", "cancelled", "interrupted")


def kind_of(request: ImageRequest) -> str:
    """``edit`` when the request has source images, else ``generate``."""
    return "edit" if request.is_edit else "generate"


def job_admitted(request: ImageRequest) -> None:
    """Count a job that was admitted."""
    JOBS_STARTED.labels(request.requester.platform, kind_of(request)).inc()


def job_refused(request: ImageRequest) -> None:
    """Count a request refused before it became a job (limits, budget, block, full queue)."""
    JOBS_FINISHED.labels(request.requester.platform, kind_of(request), "refused").inc()


def job_finished(
    request: ImageRequest, outcome: str, seconds: float, cost_usd: float | None = None
) -> None:
    """Count an admitted job's end, how long it took and what it was billed."""
    platform, kind = request.requester.platform, kind_of(request)
    JOBS_FINISHED.labels(platform, kind, outcome).inc()
    JOB_DURATION.labels(platform, kind).observe(max(seconds, 0.0))
    if cost_usd:
        spent(request.requester, cost_usd)


def spent(requester: Requester, dollars: float) -> None:
    """Add billed dollars to the requester's platform and team."""
    if dollars > 0:
        SPENT_DOLLARS.labels(requester.platform, requester.team_id).inc(dollars)


def queue_depth(waiting: int) -> None:
    """Set how many admitted jobs wait for a slot."""
    QUEUE_DEPTH.set(waiting)


def platform_error(platform: str, method: str, exc: BaseException) -> None:
    """Count a failed platform API call (``method``: the REST route or Web API method)."""
    PLATFORM_API_ERRORS.labels(platform, method, error_label(exc)).inc()


def rate_limit_wait(platform: str, method: str, seconds: float) -> None:
    """Count one wait imposed by a platform's rate limit, and how long it was."""
    RATE_LIMIT_WAITS.labels(platform, method).inc()
    RATE_LIMIT_WAIT_SECONDS.labels(platform).inc(max(seconds, 0.0))


def prompt_help_call(outcome: str) -> None:
    """Count one chat-model call of prompt help: ``ok`` or the error's label."""
    PROMPT_HELP_CALLS.labels(outcome).inc()


def error_label(exc: BaseException) -> str:
    """The exception's class name, with its HTTP status or code when it carries one."""
    name = type(exc).__name__
    for attribute in ("status_code", "status", "code"):
        value = getattr(exc, attribute, None)
        if isinstance(value, int | str) and not isinstance(value, bool) and str(value):
            return f"{name}:{value}"
    return name


@contextlib.contextmanager
def provider_call() -> Iterator[None]:
    """Time one image call, count it in flight, and count the error it ends with, if any."""
    PROVIDER_IN_FLIGHT.inc()
    began = time.monotonic()
    try:
        yield
    except Exception as exc:
        PROVIDER_ERRORS.labels(error_label(exc)).inc()
        raise
    finally:
        PROVIDER_LATENCY.observe(time.monotonic() - began)
        PROVIDER_IN_FLIGHT.dec()


# --- readiness ---------------------------------------------------------------------------
class Readiness:
    """Named checks set from the event loop and read by the HTTP thread (plain bools)."""

    def __init__(self, *, stale_s: float = 15.0, clock: Callable[[], float] = time.monotonic):
        self._stale_s = stale_s
        self._clock = clock
        self._store_ok_at: float | None = None
        self._flags: dict[str, bool] = {}

    def store_ok(self, ok: bool) -> None:
        """Record the result of a quick store read just made."""
        self._store_ok_at = self._clock() if ok else None

    def set(self, name: str, ok: bool) -> None:
        """Set another named check (a platform's connection)."""
        self._flags[name] = ok

    def __call__(self) -> dict[str, bool]:
        """Every check: the store counts as ready only if a read succeeded lately."""
        at = self._store_ok_at
        fresh = at is not None and self._clock() - at <= self._stale_s
        return {"store": fresh, **self._flags}


async def watch_store(
    read: Callable[[], Awaitable[object]],
    readiness: Readiness,
    *,
    every_s: float = 5.0,
    timeout_s: float = 2.0,
) -> None:
    """Make a quick read every ``every_s`` seconds and record whether it worked, until cancelled."""
    while True:
        try:
            await asyncio.wait_for(read(), timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A store that can't answer makes the bot not ready; say why once per failure.
            logger.warning("store check failed: %s", type(exc).__name__)
            readiness.store_ok(False)
        else:
            readiness.store_ok(True)
        await asyncio.sleep(every_s)


# --- the HTTP endpoints ------------------------------------------------------------------
class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log."""


def _app(ready: Callable[[], dict[str, bool]]) -> Callable[..., Iterable[bytes]]:
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path == "/readyz":
            try:
                checks = ready()
            except Exception:
                logger.warning("readiness check failed", exc_info=True)
                checks = {"checks": False}
            failing = sorted(name for name, ok in checks.items() if not ok)
            status = "503 Service Unavailable" if failing else "200 OK"
            body = json.dumps({"ready": not failing, "failing": failing, "checks": checks})
            start_response(status, [("Content-Type", "application/json")])
            return [body.encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    return app


class MetricsServer:
    """The endpoints served from a daemon thread; ``close`` stops them."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when asked for 0)."""
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(
    port: int, ready: Callable[[], dict[str, bool]], *, host: str = "0.0.0.0"
) -> MetricsServer:
    """Serve /metrics, /healthz and /readyz on ``port`` of every interface (it is scraped)."""
    server = make_server(
        host, port, _app(ready), server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    return MetricsServer(server)
