"""Prometheus across `serve --workers N`: every worker writes its metrics to files in one
directory, and whichever worker a scrape reaches reads them all.

The kernel hands each connection, scrapes included, to any worker, so a worker's own counters
would make every scrape a different, partial answer. prometheus_client's multiprocess mode
solves exactly this: with `PROMETHEUS_MULTIPROC_DIR` set, values live in memory-mapped files per
process id, and a `MultiProcessCollector` sums counters and histograms over them (and "live"
gauges over the processes still running). The CLI calls `prepare` in the supervisor before it
forks (the workers inherit the variable); `render` is what `/metrics` serves.

Bookkeeping the library leaves to its user is done here: the directory is emptied at start (old
files would count a previous run), a temporary one made and removed when none is configured,
and the live gauges of dead workers (a crashed worker the supervisor replaced) are dropped at
each scrape.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import tempfile
from pathlib import Path

from voxline.telemetry import metrics

_LIVE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db$")


def prepare() -> Path | None:
    """Use (or make) the multiprocess directory for this server's workers; None without
    prometheus-client. Call before forking; the environment carries it to the workers."""
    if not metrics.AVAILABLE:
        return None
    configured = os.environ.get(metrics.MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix="voxline-metrics-"))
    os.environ[metrics.MULTIPROC_ENV] = str(path)
    owner = os.getpid()

    def remove() -> None:  # workers leave through os._exit, so only the supervisor gets here
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


def render() -> bytes:
    """Every metric of this process, or of all workers in multiprocess mode, as text."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    directory = os.environ.get(metrics.MULTIPROC_ENV)
    if not directory:
        return generate_latest(REGISTRY)
    for name in glob.glob(os.path.join(directory, "gauge_live*.db")):
        found = _LIVE_FILE.search(name)
        if found is not None and not _alive(int(found.group(1))):
            mark_process_dead(int(found.group(1)), directory)  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
