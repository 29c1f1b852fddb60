"""`voxline serve --workers N`: N server processes sharing one listening socket.

Workers are stateless (agents, listeners and conversations live in the database, events cross
between them through the broker), so the kernel may hand any connection to any of them. The
parent binds the socket, forks the workers and supervises them: a worker that crashes is
replaced, and SIGTERM/SIGINT are passed on once, so each worker drains its calls (a second
signal stops them at once). Workers run in their own process group, so a terminal's Ctrl-C
reaches them once, through the parent. Under systemd, use `KillMode=mixed`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

import structlog

log = structlog.get_logger("voxline.server.workers")

RESTART_WINDOW = 60.0  # seconds over which crashes are counted
MAX_RESTARTS = 5  # crashes per worker slot within the window before the supervisor gives up


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_workers(run: Callable[[socket.socket], None], sock: socket.socket, workers: int) -> int:
    """Run `run(sock)` in `workers` child processes until they all exit; returns the exit code
    (non-zero when workers kept crashing)."""
    children: dict[int, int] = {}  # pid -> slot
    crashes: dict[int, list[float]] = {}
    stopping = False

    def start(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            os.setpgid(0, 0)
            code = 0
            try:
                run(sock)
            except BaseException:
                log.exception("worker failed", slot=slot)
                code = 1
            finally:
                os._exit(code)
        children[pid] = slot
        log.info("worker started", slot=slot, pid=pid)

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for slot in range(workers):
        start(slot)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        slot = children.pop(pid)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        log.error("worker exited; restarting it", slot=slot, pid=pid, code=code)
        now = time.monotonic()
        recent = [t for t in crashes.get(slot, []) if now - t < RESTART_WINDOW] + [now]
        crashes[slot] = recent
        if len(recent) > MAX_RESTARTS:
            log.error("worker keeps crashing; stopping the server", slot=slot)
            failed = True
            forward(signal.SIGTERM, None)
            continue
        start(slot)
    sock.close()
    return 1 if failed else 0
