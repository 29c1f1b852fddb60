"""Process-wide settings from the environment, a `.env` file and command-line flags.

Precedence is environment > `.env` > flags, so an operator's environment always wins over what a
script passes. Provider keys also accept the vendors' usual variable names (`OPENAI_API_KEY`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# A list setting that the environment may give as JSON (`["a", "b"]`) or as `a,b`.
NameList = Annotated[list[str] | None, NoDecode]


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
    stt: str = "local"  # the default speech-to-text spec
    tts: str = "local"  # the default text-to-speech spec
    vad: str = "local"  # the voice activity detector
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("VOXLINE_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("VOXLINE_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    openai_compatible_api_key: SecretStr | None = None  # for hosted compatible servers (Groq)
    # The server that key belongs to: it is sent to URLs under this one only, never elsewhere.
    openai_compatible_base_url: str | None = None
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VOXLINE_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
    )
    # Hosted voices (`elevenlabs:VOICE`, `cartesia:VOICE`; `openai:MODEL` uses the OpenAI key
    # and base URL above). A base URL points a voice elsewhere (a proxy, a test server); http(s)
    # and ws(s) are both accepted, and its key is sent there.
    elevenlabs_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VOXLINE_ELEVENLABS_API_KEY", "ELEVENLABS_API_KEY"),
    )
    elevenlabs_base_url: str | None = None  # default wss://api.elevenlabs.io
    cartesia_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VOXLINE_CARTESIA_API_KEY", "CARTESIA_API_KEY"),
    )
    cartesia_base_url: str | None = None  # default wss://api.cartesia.ai
    # Hosted speech-to-text (`deepgram:nova-3`, `deepgram:flux-general-en`,
    # `assemblyai:universal-streaming`); `openai:gpt-4o-transcribe` uses the OpenAI key above.
    # The base URLs point a provider elsewhere (a private deployment, a test's loopback fake).
    deepgram_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VOXLINE_DEEPGRAM_API_KEY", "DEEPGRAM_API_KEY"),
    )
    deepgram_base_url: str | None = None  # wss://api.deepgram.com
    assemblyai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VOXLINE_ASSEMBLYAI_API_KEY", "ASSEMBLYAI_API_KEY"),
    )
    assemblyai_base_url: str | None = None  # wss://streaming.assemblyai.com
    # Speech-to-speech agents (`openai-realtime:MODEL`, `openai-realtime:ws://HOST/v1#MODEL`).
    # The WebSocket base of `openai-realtime:MODEL` (default: OpenAI's, or `openai_base_url`
    # as ws/wss); its key defaults to `openai_api_key`.
    openai_realtime_base_url: str | None = None
    # Sent to `openai_realtime_base_url` and to `openai-realtime:URL#MODEL` URLs under it only.
    openai_realtime_api_key: SecretStr | None = None
    realtime_queue_size: int = 250  # outbound events held while the socket is slow (~5 s audio)
    realtime_keepalive: float = 20.0  # seconds between WebSocket pings to the Realtime server
    realtime_reconnect_attempts: int = 6  # tries after a dropped socket before the call ends
    realtime_max_backoff: float = 8.0  # seconds: the cap of the doubling reconnect delay
    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON when stderr is not a terminal
    redact_pii_in_logs: bool = True
    # `voxline serve`: the public face, Twilio and the approvals API.
    public_url: str | None = None  # the app's root as callers see it: https://voice.example.com
    trust_forwarded_headers: bool = True  # else X-Forwarded-Proto/-Host are ignored
    server_host: str = "127.0.0.1"
    server_port: int = 8080
    shutdown_grace_period: float = 30.0  # seconds calls in progress may go on after SIGTERM
    api_key: SecretStr | None = None  # Bearer key of the approvals API; unset: API refused
    twilio_account_sid: str | None = Field(
        default=None,
        validation_alias=AliasChoices("VOXLINE_TWILIO_ACCOUNT_SID", "TWILIO_ACCOUNT_SID"),
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VOXLINE_TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN"),
    )
    # A Webhooks Rule's SharedKey: requests carrying `X-Twilio-Webhooks-Signature-Settings` are
    # signed with it (HMAC-SHA256) instead of the auth token (HMAC-SHA1).
    twilio_webhook_shared_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "VOXLINE_TWILIO_WEBHOOK_SHARED_KEY", "TWILIO_WEBHOOK_SHARED_KEY"
        ),
    )
    # Signs the short-lived call tokens the voice webhook hands to the call's socket; defaults
    # to a key derived from the auth token, so every worker of a fleet agrees without setup.
    call_token_secret: SecretStr | None = None
    call_token_ttl: float = 120.0  # seconds from the voice webhook to the socket's setup/start
    twilio_validate_signatures: bool = True  # off only for local development
    twilio_api_base_url: str = "https://api.twilio.com"
    twilio_max_frame_bytes: int = 65536  # larger ConversationRelay frames close the socket
    sms_reply_timeout: float = 10.0  # slower SMS replies go out through the REST API
    default_country: str = "US"  # region of phone numbers written without a country code
    # The REST API under /api (keys: `voxline keys create`, or `api_key` above as a bootstrap).
    api_rate_limit: float = 10.0  # requests per second per API key, sustained (per worker)
    api_rate_burst: int = 60  # requests an idle key may send at once
    api_max_body_bytes: int = 1_048_576  # larger request bodies get 413
    # Failed credentials, per client address on every endpoint that checks one (per worker):
    # this many within the window, and the address is refused (429) for the cooldown.
    auth_max_failures: int = 10
    auth_failure_window: float = 60.0  # seconds
    auth_cooldown: float = 60.0  # seconds
    # The browser channel (`/`, `/web/call`; docs/browser.md). Loopback clients need no token
    # when this is on (local development); every other client needs a session token or a key.
    web_open_localhost: bool = True
    web_token_ttl: float = 600.0  # seconds a session token from POST /api/web/tokens lives
    web_max_calls_per_client: int = 3  # browser calls at once per client address (per worker)
    web_call_rate_limit: float = 0.2  # new browser calls per second per address, sustained
    web_call_rate_burst: int = 10  # new browser calls an idle address may start at once
    # What agents defined over the API may name (None: the defaults of voxline.agents.policy,
    # i.e. the local models and the hosted providers whose keys are set). Agents from files on
    # the server's own disk are not limited by these.
    api_allowed_llms: NameList = None  # LLM specs; `*` matches any text: `openai:*`
    api_allowed_stt: NameList = None  # speech-to-text specs: `whisper:tiny.en`
    api_allowed_tts: NameList = None  # text-to-speech specs: `piper`
    api_allowed_voices: NameList = None  # `voice` values: `joe`
    api_allowed_base_urls: NameList = None  # URLs `openai-compatible:URL#MODEL` may be under
    listener_idle_timeout: float = 300.0  # seconds a listener lives with no debug feed client
    listener_sweep_interval: float = 10.0  # seconds between sweeps for idle listeners
    # Many workers: Redis carries debug events between them (and may hold the records too).
    redis_url: str | None = None  # redis://host:6379/0; unset: events stay in this process
    redis_key_prefix: str = "voxline:"  # namespace of every key and channel voxline uses
    event_queue_size: int = 1000  # events buffered per feed subscriber before drops

    @field_validator(
        "api_allowed_llms",
        "api_allowed_stt",
        "api_allowed_tts",
        "api_allowed_voices",
        "api_allowed_base_urls",
        mode="before",
    )
    @classmethod
    def _name_list(cls, value: Any) -> Any:
        """`a, b` is easier to write in an environment file than JSON; both are accepted."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]

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
