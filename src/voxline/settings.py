"""Process-wide settings from the environment, a `.env` file and command-line flags.

Precedence is environment > `.env` > flags, so an operator's environment always wins over what a
script passes. Provider keys also accept the vendors' usual variable names (`OPENAI_API_KEY`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voxline"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voxline"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOXLINE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    database_url: str | None = None  # default: SQLite in data_dir
    llm: str = "local"  # the default LLM spec when an agent names none
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("VOXLINE_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("VOXLINE_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    openai_compatible_api_key: SecretStr | None = None  # for hosted compatible servers (Groq)
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VOXLINE_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
    )
    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON when stderr is not a terminal
    redact_pii_in_logs: bool = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, dotenv_settings, init_settings, file_secret_settings

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'voxline.db'}"


def load_settings(**flags: Any) -> Settings:
    """Settings with `flags` (None values dropped) as the lowest-priority source."""
    return Settings(**{k: v for k, v in flags.items() if v is not None})
