"""Throttling failed authentication per client address, shared by every door of one app.

A 256-bit API key cannot be guessed, but a bootstrap `VOXLINE_API_KEY` chosen by a person can,
and every failed guess costs a store lookup. So each endpoint that checks a credential (the
REST API, `/approvals`, `/web/call`, and any socket that calls `ApiKeys.authenticate` with the
client's address) records the failures of each client address here; after
`auth_max_failures` within `auth_failure_window` seconds the address is refused for
`auth_cooldown` seconds *before* its credential is even looked at (429 with `Retry-After` over
HTTP, close code 1013 on a socket). A missing credential is not a guess and is not counted.

The state is per worker (a dict in this process): with N workers an address gets up to N times
the failures before every worker refuses it. That is enough to turn a brute force from
thousands of guesses a second into a handful a minute; a fleet's load balancer should still
rate-limit by address in front of it. Memory is bounded: at most `MAX_CLIENTS` addresses are
remembered, the stalest forgotten first.

`client_address` decides who "a client" is. The socket's peer, unless `trust_forwarded_headers`
is on *and* the peer is a proxy on a private or loopback address: then the last
`X-Forwarded-For` entry (the one that proxy appended). A server exposed directly to the internet
therefore cannot be fooled by a made-up header, and IPv6 clients are counted per /64, the block
one subscriber usually holds, so hopping addresses within it gains nothing.
"""

from __future__ import annotations

import ipaddress
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from voxline.settings import Settings

MAX_CLIENTS = 10_000  # addresses remembered at once (each holds at most max_failures stamps)
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
UNKNOWN = "unknown"


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class AuthThrottle:
    def __init__(
        self,
        max_failures: int,
        window: float,
        cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max(1, max_failures)
        self.window = window
        self.cooldown = cooldown
        self._clock = clock
        self._clients: dict[str, _Record] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthThrottle:
        return cls(settings.auth_max_failures, settings.auth_failure_window, settings.auth_cooldown)

    def retry_after(self, client: str) -> float:
        """Seconds `client` must still wait before a credential of theirs is checked; 0: go."""
        record = self._clients.get(client)
        if record is None:
            return 0.0
        return max(0.0, record.blocked_until - self._clock())

    def failed(self, client: str) -> float:
        """Count a failed credential from `client`; returns the cooldown it now has (0: none)."""
        now = self._clock()
        record = self._clients.pop(client, None) or _Record()
        self._clients[client] = record  # (re)inserted last: the dict's order is staleness
        record.failures.append(now)
        while record.failures and record.failures[0] <= now - self.window:
            record.failures.popleft()
        if len(record.failures) >= self.max_failures:
            record.failures.clear()
            record.blocked_until = now + self.cooldown
        self._forget_stale(now)
        return max(0.0, record.blocked_until - now)

    def _forget_stale(self, now: float) -> None:
        if len(self._clients) <= MAX_CLIENTS:
            return
        for client in list(self._clients):
            record = self._clients[client]
            quiet = not record.failures or record.failures[-1] <= now - self.window
            if quiet and record.blocked_until <= now:
                del self._clients[client]
        while len(self._clients) > MAX_CLIENTS:  # an address flood: the stalest go first
            del self._clients[next(iter(self._clients))]


# One throttle per hub (so per app), made on first use: the API, the operator routes and the
# browser channel share it without any of them owning it, and apps in one process (tests) do
# not share failures.
_THROTTLES: weakref.WeakKeyDictionary[object, AuthThrottle] = weakref.WeakKeyDictionary()


def throttle_for(owner: object, settings: Settings) -> AuthThrottle:
    """The throttle of `owner` (the app's `ConversationHub`), made from `settings` once."""
    throttle = _THROTTLES.get(owner)
    if throttle is None:
        throttle = _THROTTLES[owner] = AuthThrottle.from_settings(settings)
    return throttle


def peer_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client is not None else UNKNOWN


def forwarded(conn: HTTPConnection) -> bool:
    """Whether a proxy says it forwarded this request for someone else."""
    return any(name in conn.headers for name in FORWARDED_HEADERS)


def client_address(conn: HTTPConnection, settings: Settings) -> str:
    """Who the client is, as a key for throttles and limits (see the module docstring)."""
    peer = peer_address(conn)
    if settings.trust_forwarded_headers and _is_private(peer):
        hops = [hop.strip() for hop in conn.headers.get("x-forwarded-for", "").split(",")]
        if hops[-1]:
            peer = hops[-1]
    return _client_key(peer)


def _is_private(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback


def _client_key(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64] or UNKNOWN  # not an address (a test client, a Unix socket): as is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def is_loopback_host(host: str) -> bool:
    """Whether a Host header (name and optional port) names this machine's loopback."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8080
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_local_client(conn: HTTPConnection) -> bool:
    """A client on this machine talking to it directly: its peer is loopback, no proxy says it
    forwarded the request (a proxy on the same host would make every internet client look
    local), and the Host header names loopback (so a DNS-rebinding page, whose Host is its own
    domain, is not local even though the browser connects to 127.0.0.1)."""
    peer = peer_address(conn)
    try:
        loopback = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
    return loopback and not forwarded(conn) and is_loopback_host(conn.headers.get("host", ""))
