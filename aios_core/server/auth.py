"""Who is calling: per-agent tokens issued by the kernel, and the admin token.

The kernel issues a token when the admin registers an agent
(``POST /v1/agents``). A token names exactly one agent, so whatever arrives
with it acts as that agent, in that agent's privilege group; a syscall that
names another agent is refused (403). Only SHA-256 hashes of tokens are kept,
in memory and in ``tokens.json`` (mode 0600) under the server's state
directory, so a copy of that file grants nothing; tokens are 256-bit random,
which makes a plain hash sufficient.

The admin token manages agents and reads kernel statistics; it cannot issue
syscalls itself (the remote SDK, given the admin token, registers each agent it
acts for and uses that agent's own token).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aios_core.errors import AccessDeniedError
from aios_core.server.errors import AuthenticationError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "aios-"
ADMIN_TOKEN_FILE = "admin.token"
TOKENS_FILE = "tokens.json"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class TokenRecord:
    agent: str
    group: str
    program: str
    priority: int
    framework: str
    created: float
    #: first characters of the hash: lets an operator tell tokens apart without revealing them
    hint: str = ""


@dataclass(frozen=True)
class Principal:
    """The caller of one request: the admin, or one agent."""

    admin: bool
    agent: str | None = None

    def require_admin(self) -> None:
        if not self.admin:
            raise AccessDeniedError("this endpoint needs the admin token; agent tokens may only issue their own agent's requests")

    def require_agent(self) -> str:
        if self.agent is None:
            raise AccessDeniedError(
                "the admin token cannot issue syscalls or completions; register an agent (POST /v1/agents) and use its token"
            )
        return self.agent

    def act_as(self, name: str) -> str:
        """The agent a request may act as: its own only."""
        me = self.require_agent()
        if name != me:
            raise AccessDeniedError(f"this token belongs to agent {me!r}; it cannot act as agent {name!r}", agent=me, requested=name)
        return me


class TokenStore:
    """Token hashes by agent, persisted atomically under ``state_dir``."""

    def __init__(self, state_dir: Path, *, admin_token: str | None = None, max_per_agent: int = 16) -> None:
        self.state_dir = Path(state_dir)
        self.max_per_agent = max_per_agent
        self._by_hash: dict[str, TokenRecord] = {}
        self._fixed_admin = admin_token is not None
        self.admin_token = admin_token or new_token()
        self._admin_hash = token_hash(self.admin_token)

    # ------------------------------------------------------------------ files

    @property
    def admin_token_path(self) -> Path:
        return self.state_dir / ADMIN_TOKEN_FILE

    @property
    def tokens_path(self) -> Path:
        return self.state_dir / TOKENS_FILE

    def open(self) -> None:
        """Create the state directory (0700), load issued tokens, write the admin token file (0600)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.state_dir, 0o700)
        except OSError:
            log.warning("could not restrict %s to its owner", self.state_dir)
        self._load()
        if not self._fixed_admin:
            _write_private(self.admin_token_path, self.admin_token + "\n")

    def _load(self) -> None:
        path = self.tokens_path
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text("utf-8"))
            self._by_hash = {h: TokenRecord(**rec) for h, rec in data.get("tokens", {}).items()}
        except (ValueError, TypeError, OSError) as exc:
            # refuse to start with a token store we cannot read: silently dropping it would lock every agent out
            from aios_core.errors import ConfigError

            raise ConfigError(f"the token store {path} is unreadable ({exc}); repair or delete it (agents then need new tokens)") from exc

    def _save(self) -> None:
        data = {"version": 1, "tokens": {h: vars(r) for h, r in self._by_hash.items()}}
        _write_private(self.tokens_path, json.dumps(data, separators=(",", ":")))

    # ------------------------------------------------------------------ tokens

    def issue(self, agent: str, *, group: str, program: str, priority: int, framework: str) -> str:
        """A new token for ``agent``. An agent holds at most ``max_per_agent``; beyond, its oldest token is revoked.

        Processes hosting agents with the admin token register them again at
        every start; without a bound, their stale tokens would pile up forever.
        """
        held = sorted((h for h, r in self._by_hash.items() if r.agent == agent), key=lambda h: self._by_hash[h].created)
        while len(held) >= self.max_per_agent:
            stale = held.pop(0)
            log.info("agent %s holds %d tokens: revoking its oldest (%s...)", agent, self.max_per_agent, stale[:8])
            del self._by_hash[stale]
        token = new_token()
        digest = token_hash(token)
        self._by_hash[digest] = TokenRecord(
            agent=agent, group=group, program=program, priority=priority, framework=framework, created=time.time(), hint=digest[:8]
        )
        # group/program/priority are the agent's: keep every token of the agent consistent
        for h in held:
            rec = self._by_hash[h]
            rec.group, rec.program, rec.priority, rec.framework = group, program, priority, framework
        self._save()
        return token

    def revoke(self, agent: str) -> int:
        doomed = [h for h, r in self._by_hash.items() if r.agent == agent]
        for h in doomed:
            del self._by_hash[h]
        if doomed:
            self._save()
        return len(doomed)

    def agents(self) -> dict[str, TokenRecord]:
        """One record per agent holding a token (to re-register them in a restarted kernel)."""
        out: dict[str, TokenRecord] = {}
        for rec in self._by_hash.values():
            out.setdefault(rec.agent, rec)
        return out

    def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        digest = token_hash(token)
        if hmac.compare_digest(digest, self._admin_hash):
            return Principal(admin=True)
        record = self._by_hash.get(digest)
        if record is None:
            raise AuthenticationError("the token is not valid for this kernel (revoked, or issued by another kernel)")
        return Principal(admin=False, agent=record.agent)

    def describe(self) -> list[dict[str, Any]]:
        return [{"agent": r.agent, "group": r.group, "created": r.created, "hint": r.hint} for r in self._by_hash.values()]


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError(
            "no token: send 'Authorization: Bearer <token>' (the admin registers agents and hands out their tokens)"
        )
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationError("malformed Authorization header: expected 'Bearer <token>'")
    return value.strip()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to ``path`` with mode 0600 (never readable by others, not even briefly)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_admin_token(state_dir: Path) -> str | None:
    """The admin token a running server wrote (for ``aios top`` / ``aios ps`` on the same machine)."""
    path = Path(state_dir) / ADMIN_TOKEN_FILE
    try:
        return path.read_text("utf-8").strip() or None
    except OSError:
        return None
