"""When and how a long conversation is condensed, as agents declare it in their JSON spec.

The policy is pure configuration so that it can live in `AgentSpec`, be published as JSON Schema
and be checked before a call starts: a policy that could never shrink the conversation (or would
summarize on every turn) is rejected here with a message that says how to fix it, rather than
discovered mid-call.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SummaryPolicy(BaseModel):
    """Thresholds, what to keep verbatim, and which model writes the summary in which language."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Summarize long conversations at all.")
    max_tokens: int | None = Field(
        default=3000,
        gt=0,
        description=(
            "Estimated size of the conversation (about 4 characters per token, tool arguments "
            "and results included) above which older turns are summarized."
        ),
    )
    max_turns: int | None = Field(
        default=None,
        gt=0,
        description="Number of turns (earlier summaries not counted) above which to summarize.",
    )
    keep_last: int = Field(
        default=6, ge=1, description="Most recent turns always kept verbatim, never summarized."
    )
    debounce_turns: int = Field(
        default=4,
        ge=0,
        description="Turns that must be added after a summary before the next one may start.",
    )
    llm: str | None = Field(
        default=None,
        description=(
            "LLM spec for the summarizer, e.g. a smaller model than the agent's "
            "('openai:gpt-4.1-mini'); null uses the session's model."
        ),
    )
    language: str | None = Field(
        default=None,
        description="Language to write summaries in; null writes in the conversation's language.",
    )
    max_summary_words: int = Field(
        default=200, ge=20, description="Upper bound on the length of one summary, in words."
    )

    @field_validator("llm", "language")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a non-empty string, or null for the default")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _thresholds_make_sense(self) -> SummaryPolicy:
        if self.enabled and self.max_tokens is None and self.max_turns is None:
            raise ValueError(
                "summarization is enabled but has no threshold: set max_tokens, max_turns or "
                "both (or set enabled to false)"
            )
        if self.max_turns is not None and self.max_turns <= self.keep_last:
            raise ValueError(
                f"max_turns ({self.max_turns}) must be greater than keep_last ({self.keep_last}): "
                "otherwise a summary cannot bring the conversation back under the threshold"
            )
        return self
