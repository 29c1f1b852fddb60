"""`Guardrails`: one session's input checks, reply-stream filter and classifier, from its agent.

The session builds it once from `AgentSpec.guardrails` and hands it to the `ReplyEngine`, which
is the only place that needs it: the engine checks each new caller turn before the model,
races the classifier against the reply, and pushes the model's text through the output filter.
Keeping the compiled patterns and the classifier's model here means a reply pays for matching
only, never for building.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voxline.guardrails.checks import (
    GuardrailContext,
    Trip,
    UnknownGuardrailError,
    complete_trip,
)
from voxline.guardrails.classifier import LLMClassifier
from voxline.guardrails.input import InputChecks, InputVerdict
from voxline.guardrails.output import OutputFilter, OutputRules
from voxline.providers.llm.base import LLM, ConfigurationError

if TYPE_CHECKING:
    from voxline.agents.spec import GuardrailSettings
    from voxline.settings import Settings


class Guardrails:
    """The guardrails of one session. `classifier_llm` replaces the model the classifier's
    spec names (tests, or an application that shares one client)."""

    def __init__(
        self,
        config: GuardrailSettings,
        *,
        settings: Settings | None = None,
        classifier_llm: LLM | None = None,
    ) -> None:
        self.config = config
        self._responses = {"respond": config.response, "handoff": config.handoff_response}
        try:
            self.input = InputChecks(
                config.input, response=config.response, handoff_response=config.handoff_response
            )
            self.output = OutputRules(config.output, GuardrailContext("output"))
        except UnknownGuardrailError as exc:
            raise ConfigurationError(str(exc)) from None
        self.context = GuardrailContext("input")
        self.classifier: LLMClassifier | None = None
        classifier = config.input.classifier
        if classifier is not None:
            if classifier_llm is None:
                from voxline.providers.llm.registry import create_llm

                classifier_llm = create_llm(classifier.llm, settings)
            self.classifier = LLMClassifier(classifier_llm, classifier)

    @classmethod
    def for_agent(
        cls, config: GuardrailSettings, settings: Settings | None = None
    ) -> Guardrails | None:
        """The guardrails `config` asks for, or None when it asks for none (no cost at all)."""
        made = cls(config, settings=settings)
        return made if made.active else None

    @property
    def active(self) -> bool:
        return self.screens_input or self.output.active

    @property
    def screens_input(self) -> bool:
        """Whether caller turns are checked at all (an agent with output checks only pays
        nothing before its replies)."""
        return self.input.active or self.classifier is not None

    def bind(self, conversation_id: str, connection: str) -> None:
        """Say whose conversation the checks run in (passed to custom checks)."""
        self.context = GuardrailContext("input", conversation_id, connection)
        self.output.ctx = GuardrailContext("output", conversation_id, connection)

    async def check_input(self, text: str) -> InputVerdict:
        return await self.input.check(text, self.context)

    async def classify(self, text: str) -> Trip | None:
        """The classifier's verdict on `text`, completed from its configuration."""
        if self.classifier is None:
            return None
        trip = await self.classifier.classify(text)
        if trip is None:
            return None
        config = self.classifier.config
        return complete_trip(trip, config.action, config.response, self._responses)

    def output_filter(self) -> OutputFilter | None:
        return self.output.filter() if self.output.active else None

    def complete_output_trip(self, trip: Trip) -> Trip:
        """A reply-stream check that cut the reply says the section's response."""
        return complete_trip(trip, "respond", None, self._responses)

    async def aclose(self) -> None:
        if self.classifier is not None:
            await self.classifier.aclose()
