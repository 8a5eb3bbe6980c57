import pytest

from raypipe.granularity import Aggregation, Granularity


@pytest.mark.parametrize(
    "text, expected",
    [
        ("word", Granularity.WORD),
        ("WORD", Granularity.WORD),
        (" All_Tokens ", Granularity.ALL_TOKENS),
        ("all-tokens", Granularity.ALL_TOKENS),
        ("cls_token", Granularity.CLS_TOKEN),
        (Granularity.SENTENCE, Granularity.SENTENCE),
    ],
)
def test_granularity_parse(text, expected):
    assert Granularity.parse(text) is expected


def test_parse_unknown_lists_valid_names():
    with pytest.raises(ValueError) as err:
        Granularity.parse("paragraph")
    message = str(err.value)
    assert "'paragraph'" in message
    assert all(g.value in message for g in Granularity)


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError, match="int"):
        Granularity.parse(3)


def test_aggregation_parse():
    assert Aggregation.parse("Signed_Max") is Aggregation.SIGNED_MAX
    assert Aggregation.parse(Aggregation.MEAN) is Aggregation.MEAN
    with pytest.raises(ValueError, match="signed_max"):
        Aggregation.parse("median")


def test_values_are_cli_names():
    assert [g.value for g in Granularity] == [
        "all", "all_tokens", "token", "cls_token", "sample", "word", "sentence"
    ]
    assert str(Granularity.WORD) == "word" and Granularity.WORD == "word"
    assert [a.value for a in Aggregation] == ["mean", "max", "min", "sum", "signed_max"]
