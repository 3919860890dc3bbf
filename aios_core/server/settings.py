"""Settings of the HTTP service (the kernel keeps its own :class:`~aios_core.config.KernelConfig`).

Environment variables ``AIOS_SERVER_*`` override the defaults, e.g.
``AIOS_SERVER_RATE_PER_AGENT=5`` or ``AIOS_SERVER_MAX_BODY_BYTES=1048576``.
Every default is safe for a loopback deployment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIOS_SERVER_", extra="forbid")

    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0, description="largest request body accepted (413 beyond)")
    rate_per_agent: float = Field(default=50.0, ge=0, description="sustained requests per second per agent (0: unlimited)")
    burst_per_agent: int = Field(default=100, ge=1, description="requests an agent may send at once before its rate applies")
    max_concurrent_per_agent: int = Field(default=64, ge=0, description="requests of one agent in progress at once (0: unlimited)")
    grace_seconds: float = Field(default=10.0, ge=0, description="on shutdown, how long in-flight requests may run before they are failed")
    admin_token: SecretStr | None = Field(default=None, description="fixed admin token (default: a new one per start, written to the token file)")
    state_dir: Path | None = Field(default=None, description="token store and admin token file (default: <data_dir>/server)")
    metrics_public: bool = Field(default=False, description="serve /metrics without the admin token")
    metrics_agent_limit: int = Field(default=200, ge=0, description="agents with their own series in /metrics (most recently active first)")
    default_max_tokens: int = Field(default=1024, ge=1, description="max_tokens of an OpenAI request that sets neither max_tokens nor max_completion_tokens")
    # shedding abuse before it costs memory (docs/configuration.md, "Security settings")
    header_timeout: float = Field(default=10.0, gt=0, description="seconds a connection has to send a complete request head (after opening, or after its previous response); then 408 and closed")
    body_timeout: float = Field(default=30.0, gt=0, description="seconds an authenticated request has to send its whole body; then 408")
    keep_alive_seconds: float = Field(default=30.0, gt=0, description="an idle keep-alive connection is closed after this many seconds")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, description="largest request head (request line and headers) accepted")
    max_connections: int = Field(default=2048, ge=1, description="open connections at once, all clients together (503 and closed beyond)")
    max_connections_per_client: int = Field(default=256, ge=1, description="open connections at once from one client address (503 and closed beyond)")
    max_json_depth: int = Field(default=64, ge=1, description="deepest nesting of arrays/objects in a JSON body (400 beyond)")
    docs_public: bool = Field(default=False, description="serve /docs and /openapi.json without a token (by default they need one, like the API)")
    max_credentials_per_agent: int = Field(default=16, ge=1, description="API tokens one agent holds at most (registering again issues another; the oldest is revoked beyond this)")
