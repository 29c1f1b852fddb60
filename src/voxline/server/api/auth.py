"""Bearer API keys: random tokens shown once, kept only as SHA-256 hashes.

A token has 256 bits of entropy, so a plain (unsalted) SHA-256 is enough to make a stolen table
useless and still allows lookup by hash. `Settings.api_key` keeps working as a bootstrap key, so
a fresh deployment can create its first stored key over the API. Comparisons of the bootstrap
key are constant-time; stored keys are found by hash, which leaks nothing about the token.

A person may choose a guessable bootstrap key, so `ApiKeys` given an `AuthThrottle` and the
client's address counts each wrong key against that address and, while the address cools down,
refuses without looking (voxline.server.auth_throttle). Callers that answer over HTTP ask
`retry_after` first, to send 429 instead of 401.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import SecretStr

from voxline.conversation.turns import new_id
from voxline.server.auth_throttle import AuthThrottle
from voxline.store.base import ApiKeyRecord, PlatformStore

TOKEN_PREFIX = "vxk_"
PREFIX_CHARS = 12  # what lists show of a key: the type marker and a few random characters
BOOTSTRAP_ID = "bootstrap"
APPROVALS_SCOPE = "approvals"  # may list and decide approvals at /approvals
SCOPES = (APPROVALS_SCOPE,)  # what a stored key may be given beyond the REST API


@dataclass(frozen=True)
class Principal:
    """Who is calling: a stored key's id, name and scopes, or the bootstrap key (every scope)."""

    key_id: str
    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    def may(self, scope: str) -> bool:
        return scope in self.scopes


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_key(name: str, scopes: Iterable[str] = ()) -> tuple[str, ApiKeyRecord]:
    """A fresh token and the record to store for it; the token exists nowhere else."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; valid: {', '.join(SCOPES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        id=new_id("key"),
        name=name,
        key_hash=hash_token(token),
        prefix=token[:PREFIX_CHARS],
        scopes=sorted(set(scopes)),
    )
    return token, record


async def create_api_key(
    store: PlatformStore, name: str, scopes: Iterable[str] = ()
) -> tuple[str, ApiKeyRecord]:
    token, record = new_api_key(name, scopes)
    await store.save_api_key(record)
    return token, record


async def revoke_api_key(store: PlatformStore, key_id: str) -> bool:
    """Mark a key revoked (it stays listed); False when there is no such key."""
    found = [record for record in await store.list_api_keys() if record.id == key_id]
    if not found:
        return False
    await store.save_api_key(found[0].model_copy(update={"revoked": True}))
    return True


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class ApiKeys:
    def __init__(
        self,
        store: PlatformStore,
        bootstrap: SecretStr | None,
        throttle: AuthThrottle | None = None,
    ) -> None:
        self.store = store
        self._bootstrap = bootstrap.get_secret_value().encode() if bootstrap else None
        self.throttle = throttle

    def retry_after(self, client: str | None) -> float:
        """Seconds `client` must wait before its key is checked (0 with no throttle or client)."""
        if self.throttle is None or client is None:
            return 0.0
        return self.throttle.retry_after(client)

    async def authenticate(self, token: str | None, client: str | None = None) -> Principal | None:
        """The key's principal, or None. With a `client` address (and a throttle), a wrong key
        counts against it, and nothing is checked while it cools down."""
        if not token:
            return None  # no credential is not a guess: not counted
        if self.retry_after(client) > 0:
            return None
        principal = await self._lookup(token)
        if principal is None and self.throttle is not None and client is not None:
            self.throttle.failed(client)
        return principal

    async def _lookup(self, token: str) -> Principal | None:
        if self._bootstrap is not None and hmac.compare_digest(token.encode(), self._bootstrap):
            return Principal(BOOTSTRAP_ID, "bootstrap (VOXLINE_API_KEY)", frozenset(SCOPES))
        record = await self.store.find_api_key(hash_token(token))
        if record is None or record.revoked:
            return None
        return Principal(record.id, record.name, frozenset(record.scopes))
