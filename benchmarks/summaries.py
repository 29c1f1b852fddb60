"""Summaries by a real model over a long call: words per summary, retries, loops, what survives.

A scripted customer-service call (names, an order id, an amount, an address that changes) is
summarized round after round as it grows, each summary replacing the one before, as a long call
does. For every round it prints what the model wrote (words, and whether the summarizer asked
again), the words stored, the "Latest:" lines the summarizer added for newest turns the model
left out, and which of the call's key facts the stored summary still holds.

    python benchmarks/summaries.py [--llm local] [--words 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator

from voxline.conversation.summarizer import Summarizer
from voxline.conversation.summary_check import Summary, words
from voxline.conversation.summary_policy import SummaryPolicy
from voxline.conversation.turns import SystemTurn, TurnStore
from voxline.providers.llm.base import LLM, LLMEvent, LLMRequest, TextDelta
from voxline.providers.llm.registry import create_llm

CALL = [
    ("user", "Hi, this is Maria Lopez. I'm calling about my order A-58213."),
    ("bot", "Hello Maria. I see order A-58213: a desk lamp and two shelves, 249 euros."),
    ("user", "The lamp arrived broken. The base is cracked."),
    ("bot", "I'm sorry. I can send a replacement lamp or refund the lamp's 59 euros."),
    ("user", "A replacement, please. Can it come before Friday?"),
    ("bot", "Yes, express delivery arrives Thursday, free of charge."),
    ("user", "Good. My phone number is 555 0100 if the courier needs it."),
    ("bot", "Noted: 555 0100. The replacement ships to 3 Main Street, Springfield."),
    ("user", "Actually I moved last week. Send it to 12 Rue Cler, Paris."),
    ("bot", "Updated: the replacement goes to 12 Rue Cler, Paris, arriving Thursday."),
    ("user", "Do I need to send the broken lamp back?"),
    ("bot", "No, keep it or recycle it. No return is needed."),
    ("user", "And the shelves, can I still return one of them?"),
    ("bot", "Yes, within 30 days. I can email you a prepaid return label."),
    ("user", "Please email it to maria.lopez@example.com."),
    ("bot", "Sent to maria.lopez@example.com. The shelf refund will be 95 euros."),
    ("user", "When will I get the 95 euros?"),
    ("bot", "Within five business days after the shelf reaches our warehouse."),
    ("user", "Can you also add a note that I prefer morning deliveries?"),
    ("bot", "Done: morning deliveries noted on your account."),
    ("user", "Is there a discount for the trouble?"),
    ("bot", "I've added a 10 euro voucher, code SORRY10, valid until the end of May."),
    ("user", "Great, thank you. One more thing: what are your opening hours?"),
    ("bot", "We answer calls from 8 am to 8 pm, Monday to Saturday."),
    ("user", "Perfect. That's all for today."),
    ("bot", "Thank you, Maria. Your replacement arrives Thursday at 12 Rue Cler."),
]
KEY_FACTS = ["Maria", "A-58213", "12 Rue Cler", "Thursday", "555 0100", "95", "SORRY10"]


class Recording:
    """Passes requests to `inner` and keeps what it streamed back for each."""

    def __init__(self, inner: LLM) -> None:
        self.inner = inner
        self.label = inner.label
        self.outputs: list[str] = []

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        self.outputs.append("")
        started = time.perf_counter()
        try:
            async for event in self.inner.stream(request):
                if isinstance(event, TextDelta):
                    self.outputs[-1] += event.text
                yield event
        finally:  # also when the summarizer stops reading (a loop, a runaway)
            spent = time.perf_counter() - started
            print(f"  the model wrote {words(self.outputs[-1])} words in {spent:.0f} s", flush=True)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def main(args: argparse.Namespace) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"LLM {args.llm}, budget {args.words} words; load average before: {load}\n")
    llm = Recording(create_llm(args.llm))
    policy = SummaryPolicy(
        max_tokens=None, max_turns=8, keep_last=2, debounce_turns=0, max_summary_words=args.words
    )
    summarizer = Summarizer(policy, llm)
    store = TurnStore("bench")
    per_round = len(CALL) // args.rounds
    for round_ in range(args.rounds):
        for role, text in CALL[round_ * per_round : (round_ + 1) * per_round]:
            (store.add_user_text if role == "user" else store.add_bot_text)(text)
        asked = len(llm.outputs)
        started = time.perf_counter()
        summary = await summarizer.summarize(store)
        spent = time.perf_counter() - started
        written = [words(text) for text in llm.outputs[asked:]]
        print(f"round {round_ + 1}: model wrote {written} words ({spent:.1f} s)", flush=True)
        if summary is None:
            print("  no summary stored\n")
            continue
        assert isinstance(summary, SystemTurn)
        parsed = Summary.parse(summary.content)
        kept = [fact for fact in KEY_FACTS if fact.lower() in summary.content.lower()]
        print(
            f"  stored {words(summary.content)} words, {len(parsed.facts)} facts, "
            f"{len(parsed.latest)} Latest: lines; key facts held {len(kept)}/{len(KEY_FACTS)}: "
            f"{', '.join(kept)}"
        )
        if args.show:
            print("  " + summary.content.replace("\n", "\n  "))
        print()
    await llm.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default="local")
    parser.add_argument("--words", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--show", action="store_true", help="print each stored summary")
    asyncio.run(main(parser.parse_args()))
