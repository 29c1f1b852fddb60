"""Long SMS replies are cut where a reader expects a break."""

from __future__ import annotations

from voxline.channels.twilio_sms import split_message


def test_short_replies_are_one_message() -> None:
    assert split_message("Hi there. See you soon!") == ["Hi there. See you soon!"]
    assert split_message("   ") == []


def test_long_replies_break_between_sentences_under_the_limit() -> None:
    sentences = [f"Sentence number {i} says something useful." for i in range(60)]
    bodies = split_message(" ".join(sentences), limit=300)
    assert all(len(b) <= 300 for b in bodies)
    assert all(b.endswith("useful.") for b in bodies)
    assert " ".join(bodies) == " ".join(sentences)


def test_paragraphs_are_kept_and_an_endless_sentence_is_cut_at_spaces() -> None:
    assert split_message("First part.\n\nSecond part.") == ["First part.\n\nSecond part."]
    endless = " ".join(["word"] * 500)
    bodies = split_message(endless, limit=200)
    assert all(len(b) <= 200 for b in bodies)
    assert " ".join(bodies).split() == endless.split()
