import pytest

from voxline.text.sentences import SentenceChunker, split_sentences


def feed_all(text: str, step: int, **kwargs: int) -> list[str]:
    chunker = SentenceChunker(**kwargs)
    chunks: list[str] = []
    for start in range(0, len(text), step):
        chunks += chunker.feed(text[start : start + step])
    return chunks + chunker.flush()


def test_splits_on_sentence_ends() -> None:
    text = "Hello there! How are you? I am fine. Thanks."
    assert split_sentences(text) == ["Hello there!", "How are you?", "I am fine.", "Thanks."]


def test_feed_returns_a_sentence_only_once_its_end_is_certain() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("It costs 3.") == []
    assert chunker.feed("5 dollars. Then") == ["It costs 3.5 dollars."]
    assert chunker.feed(" more") == []
    assert chunker.flush() == ["Then more"]
    assert chunker.flush() == []


def test_abbreviations_initials_and_list_numbers_do_not_end_sentences() -> None:
    text = "Dr. Smith met J. Doe at St. Paul's, e.g. on Monday. 1. Buy milk. Done."
    assert split_sentences(text) == [
        "Dr. Smith met J. Doe at St. Paul's, e.g. on Monday.",
        "1. Buy milk.",
        "Done.",
    ]


def test_closing_quotes_and_repeated_marks_stay_with_their_sentence() -> None:
    text = 'He said "stop!" Then left... Really?! Yes.'
    assert split_sentences(text) == ['He said "stop!"', "Then left...", "Really?!", "Yes."]


def test_line_breaks_end_chunks_and_blank_lines_vanish() -> None:
    assert split_sentences("- eggs\n\n- flour\n- sugar") == ["- eggs", "- flour", "- sugar"]


def test_long_sentence_is_cut_at_the_last_clause_that_fits() -> None:
    text = (
        "When the storm finally passed over the valley, the farmers walked out to their fields, "
        "counted the broken fences and began to repair them before nightfall."
    )
    chunks = split_sentences(text, max_chars=100, min_clause_chars=20)
    assert chunks == [
        "When the storm finally passed over the valley, the farmers walked out to their fields,",
        "counted the broken fences and began to repair them before nightfall.",
    ]


def test_long_sentence_without_clauses_is_cut_at_a_space() -> None:
    text = " ".join(["word"] * 40) + "."
    chunks = split_sentences(text, max_chars=50, min_clause_chars=10)
    assert all(len(chunk) <= 50 for chunk in chunks)
    assert " ".join(chunks) == text


def test_text_without_spaces_is_cut_hard_at_max_chars() -> None:
    assert split_sentences("x" * 25, max_chars=10, min_clause_chars=5) == [
        "x" * 10,
        "x" * 10,
        "x" * 5,
    ]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_streaming_in_any_pieces_gives_the_same_chunks(step: int) -> None:
    text = (
        "Sure! The forecast for Paris, France, tomorrow is sunny with a high of 21.5 degrees; "
        "in the evening, clouds roll in from the west — bring a jacket, an umbrella, and maybe "
        "a scarf if you are out late. Mr. Brown agrees.\nAnything else?"
    )
    expected = split_sentences(text, max_chars=60, min_clause_chars=15)
    assert feed_all(text, step, max_chars=60, min_clause_chars=15) == expected
    assert all(len(chunk) <= 60 for chunk in expected)
    assert " ".join(expected).replace("\n", " ") == text.replace("\n", " ")


def test_rejects_inconsistent_limits() -> None:
    with pytest.raises(ValueError):
        SentenceChunker(max_chars=10, min_clause_chars=10)
