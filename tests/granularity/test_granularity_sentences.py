import pytest

from raypipe.granularity import split_sentences


def sentences(text):
    return [text[a:b] for a, b in split_sentences(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello world. Bye now.", ["Hello world.", "Bye now."]),
        ("Is it? Yes! Fine.", ["Is it?", "Yes!", "Fine."]),
        ("Really?! Yes.", ["Really?!", "Yes."]),
        ("Pi is 3.14 today. Next.", ["Pi is 3.14 today.", "Next."]),
        ("Fruit, e.g. Apples, i.e. Red ones. Done.", ["Fruit, e.g. Apples, i.e. Red ones.", "Done."]),
        ("Mr. Smith met Dr. Who. They talked.", ["Mr. Smith met Dr. Who.", "They talked."]),
        ("Apples, pears, etc. And more.", ["Apples, pears, etc. And more."]),
        ("J. Smith came. U.S. Army too.", ["J. Smith came.", "U.S. Army too."]),
        ("Wait... what? No... Stop.", ["Wait... what?", "No...", "Stop."]),
        ("Wait\u2026 Go.", ["Wait\u2026", "Go."]),
        ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
        ("He said \u201cStop.\u201d Then left.", ["He said \u201cStop.\u201d", "Then left."]),
        ("(See above.) Next one.", ["(See above.)", "Next one."]),
        ('"Why?" she asked. Ok.', ['"Why?" she asked.', "Ok."]),
        ("Visit example.com now. Ok.", ["Visit example.com now.", "Ok."]),
        ("In 2020. Then 2021.", ["In 2020.", "Then 2021."]),
        ("First line\nsecond line", ["First line", "second line"]),
        ("  Para one.\n\n  Para two.  \r\nThree", ["Para one.", "Para two.", "Three"]),
        ("no terminal punctuation", ["no terminal punctuation"]),
        ("...and then", ["...and then"]),
    ],
)
def test_split(text, expected):
    assert sentences(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t ", " \r\n "])
def test_whitespace_only_has_no_sentences(text):
    assert split_sentences(text) == []


def test_spans_are_ordered_stripped_and_separated_by_whitespace_only():
    text = ' One. Two!  "Three?"\n\nFour... Five e.g. six. 7.5 is a number.  '
    spans = split_sentences(text)
    assert len(spans) == 6
    cursor = 0
    for start, end in spans:
        assert cursor <= start < end
        assert text[cursor:start].strip() == ""
        assert not text[start].isspace() and not text[end - 1].isspace()
        cursor = end
    assert text[cursor:].strip() == ""
