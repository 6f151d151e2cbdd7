"""System metrics of a training job: MLflow's own monitor, started and restarted around outages.

MLflow's ``SystemMetricsMonitor`` samples rank 0's node every ``interval_s`` seconds in a daemon
thread and logs ``system/...`` metrics with the sample count as step (continued on resume).
Samples are not buffered: during an outage the monitor logs one warning and ends, and
:meth:`SystemMetrics.ensure` (called by the tracker after each successful delivery) starts a
new one, at most once per cool-down. Without ``psutil`` (or when the monitor cannot start) one
warning is logged and the job goes on without system metrics. See :mod:`trainer.tracking`.
"""

from __future__ import annotations

import logging
import math
import time

from segctl.recipe.secrets import redact_url_credentials

log = logging.getLogger("trainer.tracking")  # one logger for everything tracking says

#: The logger of MLflow's ``SystemMetricsMonitor``.
MONITOR_LOGGER = "mlflow.system_metrics.system_metrics_monitor"


def _system_metrics_monitor(run_id: str, uri: str, interval_s: float):
    """``(monitor, done)``: MLflow's ``SystemMetricsMonitor`` for ``run_id`` (steps continue
    after those already logged) and an event set when its thread ends, for whatever reason.

    Raises:
        ImportError: psutil (or MLflow's monitor) is missing; whatever MLflow raises when the
            run cannot be read.
    """
    import threading

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    done = threading.Event()

    class Monitor(SystemMetricsMonitor):
        error: Exception | None = None

        def monitor(self) -> None:
            try:
                super().monitor()  # returns (after one warning) when MLflow cannot be reached
            except Exception as exc:  # a sampling failure: not worth a traceback per start
                self.error = exc
                log.warning("system metrics stopped: %s: %s", type(exc).__name__,
                            redact_url_credentials(str(exc)))
            finally:
                done.set()

    monitor = Monitor(run_id, sampling_interval=interval_s, resume_logging=True,
                      tracking_uri=uri)
    return monitor, done


class SystemMetrics:
    """MLflow's system metrics monitor for one run, as a tracker holds it.

    Args:
        uri: the MLflow tracking URI.
        enabled: whether to sample at all; turned off for good when sampling cannot work
            (psutil missing, sampling itself failing).
        interval_s: the sampling interval, seconds.
    """

    def __init__(self, uri: str, *, enabled: bool, interval_s: float) -> None:
        self.uri = uri
        self.enabled = enabled
        self.interval_s = interval_s
        self._monitor = None  # MLflow's SystemMetricsMonitor while one runs
        self._done = None  # threading.Event set when its thread has ended
        self._started = -math.inf

    def ensure(self, run_id: str | None, cooldown_s: float) -> None:
        """Start the monitor on ``run_id`` when none is running: at start, and again after an
        outage ended the previous one (at most one start per ``cooldown_s`` or interval)."""
        if not (self.enabled and run_id):
            return
        if self._done is not None and not self._done.is_set():
            return  # the current monitor is alive
        if self._monitor is not None and getattr(self._monitor, "error", None) is not None:
            self.enabled = False  # sampling itself failed: starting again would too
            return
        now = time.monotonic()
        if now - self._started < max(cooldown_s, self.interval_s):
            return
        self._started = now
        self.stop(quiet=False)  # an ended monitor: deliver the samples it still holds
        try:
            monitor, done = _system_metrics_monitor(run_id, self.uri, self.interval_s)
            monitor.start()
        except ImportError as exc:  # psutil missing (or an MLflow without the monitor)
            self.enabled = False  # say it once, not at every delivery
            log.warning("system metrics not logged (%s); training continues", exc)
            return
        except Exception as exc:
            log.warning("system metrics monitor not started: %s: %s", type(exc).__name__,
                        redact_url_credentials(str(exc)))
            return
        self._monitor, self._done = monitor, done

    def stop(self, quiet: bool) -> None:
        """Stop the monitor thread, which flushes its last samples; never raises.

        ``quiet``: the server is known to be away (a tracking call failed less than a
        cool-down ago), so that flush fails: its samples are dropped like any taken during an
        outage, and MLflow's error line about it is held back (the tracker has already said
        the server is away).
        """
        monitor, self._monitor = self._monitor, None
        self._done = None
        if monitor is None:
            return
        mlflow_log = logging.getLogger(MONITOR_LOGGER)
        level = mlflow_log.level
        if quiet:
            mlflow_log.setLevel(logging.CRITICAL)
        try:
            monitor.finish()
        except Exception as exc:
            log.warning("system metrics monitor did not stop cleanly: %s: %s",
                        type(exc).__name__, redact_url_credentials(str(exc)))
        finally:
            mlflow_log.setLevel(level)
