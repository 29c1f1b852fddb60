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


# -- the opening phrase (first_words) -----------------------------------------------------------
def test_the_first_chunk_ends_at_the_first_clause_then_whole_sentences_follow() -> None:
    text = "Sure, I can help with that. Which order is it, the blue one or the red one?"
    assert split_sentences(text, first_words=4) == [
        "Sure,",
        "I can help with that.",
        "Which order is it, the blue one or the red one?",
    ]


def test_a_short_first_sentence_is_kept_whole() -> None:
    assert split_sentences("The capital of France is Paris.", first_words=4) == [
        "The capital of France is Paris."
    ]
    assert split_sentences("Certainly! Try Dune.", first_words=4) == ["Certainly!", "Try Dune."]


def test_a_long_opening_is_cut_before_a_conjunction_after_enough_words() -> None:
    text = "Dogs are loyal companions and they love to play outside. Yes."
    assert split_sentences(text, first_words=4) == [
        "Dogs are loyal companions",
        "and they love to play outside.",
        "Yes.",
    ]
    # "of" at word three is too early to cut at; the break waits for four words.
    assert split_sentences("A cup of tea with milk is nice.", first_words=4)[0] == ("A cup of tea")


def test_an_opening_with_no_break_is_cut_after_twice_the_words_never_on_an_article() -> None:
    text = "Reading good mystery novels every single evening is the best habit ever."
    assert split_sentences(text, first_words=3) == [
        "Reading good mystery novels every single",
        "evening is the best habit ever.",
    ]
    dangling = "You could maybe just try the classic novels tonight."
    assert split_sentences(dangling, first_words=3)[0] == "You could maybe just try the classic"


def test_without_first_words_the_first_chunk_is_a_whole_sentence() -> None:
    text = "Sure, I can help with that. Anything else?"
    assert split_sentences(text) == ["Sure, I can help with that.", "Anything else?"]


@pytest.mark.parametrize("step", [1, 2, 3, 5, 1000])
def test_the_opening_phrase_is_the_same_in_any_pieces(step: int) -> None:
    for text in (
        "Dogs are loyal companions and they love to play outside. Yes.",
        "Well - it depends on the day, really. Mostly sunny.",
        "Reading good mystery novels every single evening is the best habit ever.",
        "Hi.",
    ):
        expected = split_sentences(text, first_words=4)
        assert feed_all(text, step, first_words=4) == expected
        assert " ".join(expected) == text
