from __future__ import annotations

import shutil

import pytest

from pipeline.caption.prompts import PROMPTS_DIR, load_prompt, prompt_facts
from pipeline.core.errors import ConfigError
from tests.pipeline.caption.test_template import LAKE_TOWN, make_input

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


@pytest.mark.parametrize("name", ["grounded-v1", "llama3-ms-clip-v1"])
def test_fixed_text_before_the_image_and_facts_after(name):
    prompt = load_prompt(name)
    a = prompt.first_turn(prompt_facts(make_input(LAKE_TOWN, sid="a")), IMAGE)
    assert a[0]["role"] == "system"
    before, image, after = a[1]["content"]
    assert image == IMAGE and before["text"] == prompt.instructions
    assert "lake Aldersee, in the north-east, 8% of the image" in after["text"]
    assert "forest, 55% of the image" in after["text"]
    assert "10 m" in prompt.instructions  # tells the model what the pixels cannot show
    # Another chip: everything up to the image is byte-identical (prefix-cache friendly).
    empty = make_input(LAKE_TOWN.__class__(), sid="b")
    b = prompt.first_turn(prompt_facts(empty), IMAGE)
    assert a[0] == b[0] and a[1]["content"][:2] == b[1]["content"][:2]
    assert a[1]["content"][2] != b[1]["content"][2]


def test_multi_turn_structure():
    prompt = load_prompt("llama3-ms-clip-v1")
    assert prompt.kind == "multi_turn" and len(prompt.questions) == 3
    first = prompt.first_turn(prompt_facts(make_input(LAKE_TOWN)), IMAGE)
    assert first[1]["content"][2]["text"].endswith(prompt.questions[0])
    assert prompt.follow_ups() == [*prompt.questions[1:], prompt.merge]
    assert "The image is a satellite view of" in prompt.merge
    assert load_prompt("grounded-v1").follow_ups() == []


def test_version_hash_covers_includes(tmp_path):
    for f in PROMPTS_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    a = load_prompt(tmp_path / "grounded-v1.yaml")
    assert a.prompt_version == load_prompt("grounded-v1").prompt_version
    assert a.prompt_version.startswith("grounded-v1+")
    (tmp_path / "facts.j2").write_text((tmp_path / "facts.j2").read_text() + "\nextra")
    assert load_prompt(tmp_path / "grounded-v1.yaml").digest != a.digest


def test_unknown_and_broken_prompts(tmp_path):
    with pytest.raises(ConfigError, match="known"):
        load_prompt("no-such-prompt")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nversion: 1\nkind: multi_turn\nsystem: s\ninstructions: i\ncontext: c\n"
    )
    with pytest.raises(ConfigError) as info:
        load_prompt(bad)
    assert info.value.field == "captioner.prompt"
