"""Kernel configuration: one TOML file plus ``AIOS_*`` environment variables, validated by pydantic.

Precedence: keyword arguments > environment (``AIOS_SCHEDULER=rr``,
``AIOS_SCHEDULER_OPTIONS='{"quantum": 16}'``, nested keys with ``__``) > the
TOML file (``--config``, ``AIOS_CONFIG`` or ``./aios.toml``) > defaults. A bad
value fails with a :class:`ConfigError` naming the offending key, e.g.
``cores.0.max_batch: Input should be greater than 0``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from aios_core.errors import ConfigError


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("aios", appauthor=False))


class CoreConfig(BaseModel):
    """One LLM core. Keys besides ``kind`` and ``name`` are passed to the core's factory."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(description="registered core kind: llamacpp, transformers, openai, sim, or a plugin's")
    name: str | None = Field(default=None, description="unique core name (defaults to the kind)")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class KernelConfig(BaseSettings):
    """Everything the kernel needs to start. Every field has a default that runs offline."""

    model_config = SettingsConfigDict(env_prefix="AIOS_", env_nested_delimiter="__", extra="forbid", validate_default=True)

    scheduler: str = Field(default="plas", description="scheduling policy: fifo, rr, priority, plas, srpt or a plugin's")
    scheduler_options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the policy, e.g. quantum for rr")
    preemption: bool = Field(default=True, description="let the policy preempt running generations (snapshot + resume)")
    preempt_recompute: bool = Field(
        default=False,
        description="also preempt generations on cores that cannot snapshot (openai): they resume by prefilling prompt and text again",
    )
    cores: list[CoreConfig] = Field(
        default_factory=lambda: [CoreConfig(kind="llamacpp")],
        description="LLM cores; the first core's model is the default model",
    )
    default_model: str | None = Field(default=None, description="model (or core) used when a request names none")
    data_dir: Path = Field(default_factory=default_data_dir, description="where storage, memory, audit log and spilled snapshots live")
    max_queued: int = Field(default=100_000, gt=0, description="LLM syscalls that may wait per model before callers get QueueFullError")
    max_retries: int = Field(default=1, ge=0, description="retries of a generation whose core failed before producing output")
    snapshot_budget_mb: int = Field(default=512, gt=0, description="memory for preempted generations' snapshots; the rest spills to disk")
    auto_register_agents: bool = Field(default=False, description="accept syscalls from agents that were never registered")
    default_group: str = Field(default="default", description="access group of agents registered without one")
    tool_workers: int = Field(default=16, gt=0, description="tool syscalls running at once (per-tool limits apply too)")
    storage_workers: int = Field(default=4, gt=0, description="storage syscalls running at once")
    memory_workers: int = Field(default=4, gt=0, description="memory syscalls running at once")
    entry_point_plugins: bool = Field(default=True, description="load third-party plugins from the 'aios' entry-point group")
    disabled_plugins: list[str] = Field(default_factory=list, description="plugin names not to load")
    managers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="options of the memory, storage, tools and access managers, by manager name"
    )

    @field_validator("cores")
    @classmethod
    def _unique_names(cls, cores: list[CoreConfig]) -> list[CoreConfig]:
        if not cores:
            raise ValueError("at least one core is needed")
        seen: set[str] = set()
        for i, core in enumerate(cores):
            name = core.name or (core.kind if i == 0 else f"{core.kind}-{i}")
            core.name = name
            if name in seen:
                raise ValueError(f"two cores are named {name!r}; give each a unique name")
            seen.add(name)
        return cores

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_path()
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if path is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=path),)
        return sources


def _config_path() -> Path | None:
    explicit = os.environ.get("AIOS_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"AIOS_CONFIG points at {path}, which is not a file")
        return path
    local = Path("aios.toml")
    return local if local.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> KernelConfig:
    """Build the configuration; errors name the offending key and the file it came from."""
    previous = os.environ.get("AIOS_CONFIG")
    if path is not None:
        os.environ["AIOS_CONFIG"] = str(path)
    try:
        return KernelConfig(**overrides)
    except ValidationError as exc:
        origin = f" in {os.environ.get('AIOS_CONFIG') or 'aios.toml / AIOS_* variables'}"
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise ConfigError("invalid configuration" + origin + ": " + "; ".join(lines), errors=lines) from None
    except ValueError as exc:  # e.g. a TOML syntax error
        raise ConfigError(f"invalid configuration: {exc}") from None
    finally:
        if path is not None:
            if previous is None:
                os.environ.pop("AIOS_CONFIG", None)
            else:
                os.environ["AIOS_CONFIG"] = previous
