"""CPU cost of guardrails per sentence, on the hot path of a reply.

Input: the checks a caller's turn goes through before the model (PII detection of every kind,
a blocked-topic list, one custom check). Output: a reply streamed through the output filter in
model-sized deltas (3-6 characters), with card masking alone (the default) and with everything
(card masking, a word list, a custom per-sentence check). Sentences are ordinary support-call
lines, a fifth of them holding a phone number, an e-mail or a card number, so the numbers
include the slow path. Prints microseconds per sentence.

    python benchmarks/guardrails.py [--sentences 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from voxline.agents.spec import AgentSpec
from voxline.guardrails.checks import GuardrailContext, Trip, guardrail
from voxline.guardrails.runner import Guardrails

PLAIN = [
    "I'd like to change the delivery address on my last order, please.",
    "Can you tell me when the store opens on Sunday morning?",
    "The package arrived yesterday but one of the items was missing.",
    "Sure, I can help you with that right away.",
    "Your order will be delivered on Thursday between nine and noon.",
    "Is there anything else I can do for you today?",
    "I was charged twice for the same subscription this month.",
    "Let me check the status of your refund in our system.",
]
PERSONAL = [
    "You can reach me at 415-555-0100 after six.",
    "My email is jane.doe@example.com if you need it.",
    "The card on file is 4111 1111 1111 1111 and it expires next year.",
    "My social security number is 123-45-6789.",
]


@guardrail(name="bench_no_competitors")
def _no_competitors(text: str, ctx: GuardrailContext) -> Trip | None:
    return Trip("bench_no_competitors") if "acme" in text.lower() else None


@guardrail(name="bench_sentence_ok")
def _sentence_ok(text: str, ctx: GuardrailContext) -> None:
    return None


def sentences(count: int) -> list[str]:
    rng = random.Random(7)
    return [rng.choice(PERSONAL if i % 5 == 0 else PLAIN) for i in range(count)]


def deltas(text: str, rng: random.Random) -> list[str]:
    out: list[str] = []
    at = 0
    while at < len(text):
        size = rng.randint(3, 6)
        out.append(text[at : at + size])
        at += size
    return out


def guards(**section: object) -> Guardrails:
    return Guardrails(AgentSpec(name="bench", guardrails=section).guardrails)


async def bench_input(lines: list[str]) -> float:
    guardrails = guards(
        input={
            "pii": {"kinds": ["card", "email", "phone", "national_id"]},
            "blocked_topics": {
                "keywords": ["lawsuit", "attorney", "bomb", "suicide"],
                "patterns": [r"\bsue\b", r"class[- ]action"],
            },
            "custom": ["bench_no_competitors"],
        }
    )
    started = time.perf_counter()
    for line in lines:
        await guardrails.check_input(line)
    return (time.perf_counter() - started) / len(lines) * 1e6


def bench_output(lines: list[str], guardrails: Guardrails) -> float:
    rng = random.Random(3)
    streams = [deltas(line + " ", rng) for line in lines]
    started = time.perf_counter()
    for stream in streams:
        stream_filter = guardrails.output_filter()
        assert stream_filter is not None
        for delta in stream:
            stream_filter.feed(delta)
        stream_filter.flush()
    return (time.perf_counter() - started) / len(lines) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=20000)
    args = parser.parse_args()
    lines = sentences(args.sentences)
    default = guards()
    everything = guards(
        output={
            "professional_language": {"words": ["damn", "crap", "stupid"]},
            "custom": ["bench_sentence_ok"],
        }
    )
    rows = [
        ("input: PII (4 kinds) + topics + 1 custom check", asyncio.run(bench_input(lines))),
        ("output: card masking (default), streamed", bench_output(lines, default)),
        ("output: cards + word list + custom check", bench_output(lines, everything)),
    ]
    print(f"{args.sentences} sentences, {sum(map(len, lines)) / len(lines):.0f} chars on average")
    for label, micros in rows:
        print(f"{label:<50} {micros:8.1f} µs/sentence")


if __name__ == "__main__":
    main()
