import pytest

from aligncoder_lsp.server.positions import to_client_units, to_code_points

LINE = 'x = "😋é"'


@pytest.mark.parametrize("encoding, units", [("utf-32", 7), ("utf-16", 8), ("utf-8", 11)])
def test_round_trip_after_the_emoji_and_accent(encoding, units):
    assert to_client_units(LINE, 7, encoding) == units
    assert to_code_points(LINE, units, encoding) == 7


def test_columns_past_the_end_clamp():
    assert to_code_points("abc", 99, "utf-16") == 3
