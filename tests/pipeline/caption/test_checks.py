from __future__ import annotations

import pytest

from pipeline.caption.checks import check_caption, clip_token_count
from tests.pipeline.caption.test_template import CLEAR, LAKE_TOWN


def flags(caption, finish_reason="stop"):
    return set(
        check_caption(caption, finish_reason=finish_reason, context=LAKE_TOWN, stats=CLEAR).flags
    )


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("A summer image of forest and grassland with the lake Aldersee in the north-east.", set()),
        ("", {"empty"}),
        ("I'm sorry, but I cannot determine what this image shows.", {"refusal"}),
        ("Sure! Here is a caption: forest and a lake in summer.", {"boilerplate"}),
        ("forest and lake forest and lake forest and lake forest and lake.", {"repetition"}),
        ("The image shows forest and grassland around the lake Aldersee and", {"truncated"}),
        ("Ein Wald und ein See mit der Stadt im Sommer, Wiesen ringsum.", {"not_english"}),
        ("3\x1e>\x1c\ufffd v\ufffd\ufffd", {"not_english", "too_short", "truncated"}),
        ("Forest.", {"too_short"}),
        ("Cars park near the lake in the forest.", {"ungrounded"}),
    ],
)
def test_flags(caption, expected):
    assert flags(caption) == expected


def test_length_limit_and_clip_tokens():
    assert "truncated" in flags("A forest with a lake.", finish_reason="length")
    long = "A summer image of forest and grassland with a lake. " * 8
    checks = check_caption(long, finish_reason="stop", context=LAKE_TOWN, stats=CLEAR)
    assert "over_77_clip_tokens" in checks.flags and checks.clip_tokens > 77
    assert clip_token_count("the") == 3  # start + "the</w>" + end
    assert checks.words == 80 and checks.language == "en"
