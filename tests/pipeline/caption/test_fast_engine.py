"""The fast engine and the `fast` captioner backend against transformers `generate`, on CPU.

The model is the project's tiny LLaVA-Next (pipeline/demo/tiny_llava.py) in fp32, its weights
drawn again at a larger scale: with the default initialisation every chip gets the same greedy
answer, which would hide rows that are swapped or read another row's cache. The stop token is
one the model's own greedy answers reach at different steps, so that rows end at different
steps; with fewer slots than chats, slots are refilled. On a CPU the engine runs the same code
as on a GPU, eagerly (no compilation, no CUDA graphs, SDPA attention).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from pipeline.caption.backends.transformers import TransformersCaptioner
from pipeline.caption.engines.captioner import FastLlavaCaptioner, TilesAhead
from pipeline.caption.engines.fast_llava import FastLlavaEngine, Request
from pipeline.caption.interface import CaptionInput
from pipeline.caption.prompts import load_prompt, prompt_facts
from pipeline.caption.registry import make_captioner
from pipeline.core.config import CaptionerConfig
from pipeline.core.errors import ConfigError
from pipeline.core.types import ShareItem
from tests.pipeline.caption.test_template import LAKE_TOWN, make_input

NEW_TOKENS = 16
SLOTS = 3


def chips(n: int) -> list[CaptionInput]:
    """Chips whose facts (hence prompt lengths) and images differ."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        pixels = rng.integers(0, 255, (264, 264, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, format="PNG")
        context = dataclasses.replace(
            LAKE_TOWN,
            land_cover=LAKE_TOWN.land_cover[: i % 3 + 1],
            roads=[ShareItem("track", 0.1 * j) for j in range(1, i % 4 + 1)],
            tags=[f"tag{j}" for j in range(i)],
        )
        chip = make_input(context, sid=f"s_{i}")
        out.append(dataclasses.replace(chip, rgb_png=buf.getvalue()))
    return out


def redraw_weights(model: nn.Module, std: float) -> None:
    """Random weights at ``std`` (norm weights near 1), seeded."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            is_norm = isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")
            for name, param in module.named_parameters(recurse=False):
                if is_norm and name == "weight":
                    param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
                else:
                    param.copy_(std * torch.randn(param.shape, generator=gen))


def reference(model: Any, requests: Sequence[Request], **kw: Any) -> list[list[int]]:
    """Plain greedy `generate`, one request at a time (no padding), EOS from the model."""
    out = []
    with torch.inference_mode():
        for r in requests:
            ids = r.input_ids[None]
            generated = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=r.tiles()[None],
                image_sizes=torch.tensor([r.image_size]),
                max_new_tokens=r.max_new_tokens,
                do_sample=False,
                **kw,
            )
            out.append(generated[0, ids.shape[1] :].tolist())
    return out


def first_steps(answers: Sequence[Sequence[int]], token: int) -> list[int | None]:
    """The step at which each answer first emits ``token`` (``None``: never)."""
    return [list(a).index(token) if token in a else None for a in answers]


@pytest.fixture(scope="module")
def model_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with larger weights, its EOS a token its answers reach at varied steps."""
    import transformers

    out = tmp_path_factory.mktemp("models") / "tiny-llava-next-std03"
    shutil.copytree(tiny_model, out)
    model = transformers.AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    redraw_weights(model, std=0.3)
    model.save_pretrained(out)
    cap = FastLlavaCaptioner(str(out), "grounded-v1", device="cpu", max_new_tokens=NEW_TOKENS)
    requests = requests_for(cap, chips(8))
    answers = reference(cap.net, requests, eos_token_id=[], min_new_tokens=NEW_TOKENS)

    def spread(token: int) -> int:
        """Distinct first steps of ``token``, if some answers never reach it (else 0)."""
        steps = first_steps(answers, token)
        return len(set(steps)) if 0 < steps.count(None) < len(steps) else 0

    stop = max(sorted({t for a in answers for t in a}), key=spread)
    config = json.loads((out / "generation_config.json").read_text())
    config["eos_token_id"] = stop
    (out / "generation_config.json").write_text(json.dumps(config))
    return out


def requests_for(cap: FastLlavaCaptioner, inputs: Sequence[CaptionInput]) -> list[Request]:
    """The engine requests of the chips' first turns, as the backend renders them."""
    texts = [
        cap.processor.apply_chat_template(
            cap.prompt.first_turn(prompt_facts(x), cap.image_part(x.rgb_png)),
            add_generation_prompt=True,
            tokenize=False,
        )
        for x in inputs
    ]
    return [cap.request(t, x.rgb_png) for t, x in zip(texts, inputs, strict=True)]


@pytest.fixture(scope="module")
def fast(model_dir: Path) -> FastLlavaCaptioner:
    return FastLlavaCaptioner(
        str(model_dir), "grounded-v1", device="cpu", batch_size=SLOTS, max_new_tokens=NEW_TOKENS
    )


@pytest.fixture(scope="module")
def expected(fast: FastLlavaCaptioner) -> tuple[list[Request], list[list[int]]]:
    requests = requests_for(fast, chips(8))
    return requests, reference(fast.net, requests)


def fresh_engine(cap: FastLlavaCaptioner) -> FastLlavaEngine:
    """An engine like the backend's, with one-row refills and 2-row prefill chunks."""
    return FastLlavaEngine(
        cap.net,
        slots=SLOTS,
        chunk=2,
        refill_rows=1,
        kv_buckets=3,
        stop_ids=sorted(cap.stop_ids),
        use_compile=False,
        use_graphs=False,
    )


def test_engine_agrees_with_generate_token_for_token(fast, expected):
    requests, ref = expected
    engine = fresh_engine(fast)
    with torch.inference_mode():
        got, stats = engine.generate(requests)
        again, _ = engine.generate(requests)  # all state is reset between calls
    # The case is the one the issue names: ragged prompts, rows ending at different steps (a
    # stop token or the limit), more rows than slots.
    assert len({r.prompt_len for r in requests}) == len(requests)
    assert len({len(t) for t in ref}) >= 3
    assert {len(t) == NEW_TOKENS for t in ref} == {True, False}
    assert stats.refilled_rows == len(requests) - SLOTS and len(stats.kv_lengths) > 1
    assert [g.tokens for g in got] == ref
    assert [g.stopped for g in got] == [t[-1] in fast.stop_ids for t in ref]
    assert again == got
    assert stats.new_tokens == sum(len(t) for t in ref)
    assert stats.live_row_steps == sum(len(t) - 1 for t in ref)  # the first comes from prefill


def position_kept(engine: FastLlavaEngine, slot: int, pos: Tensor, mask: Tensor) -> None:
    """The refilled row keeps the freed slot's position (parked at 0), not its prompt length."""
    engine.pos[slot] = pos[slot]


def mask_kept(engine: FastLlavaEngine, slot: int, pos: Tensor, mask: Tensor) -> None:
    """The keys the previous row opened stay open for the refilled row."""
    engine.mask[slot] = torch.maximum(engine.mask[slot], mask[slot])


Fault = Callable[[FastLlavaEngine, int, Tensor, Tensor], None]


def break_refills(engine: FastLlavaEngine, fault: Fault) -> Callable[..., None]:
    """``engine._start_rows`` with ``fault`` done to every refilled slot (not to first fills)."""
    start_rows = engine._start_rows
    started: set[int] = set()

    def broken(slots: Sequence[int], prompt_lens: Sequence[int], first: Sequence[int]) -> None:
        pos, mask = engine.pos.clone(), engine.mask.clone()
        start_rows(slots, prompt_lens, first)
        for slot in set(slots) & started:
            fault(engine, slot, pos, mask)
        started.update(slots)

    return broken


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(position_kept, id="position-not-reset-after-refill"),
        pytest.param(mask_kept, id="key-mask-not-reset-after-refill"),
    ],
)
def test_broken_refills_fail_the_comparison(fast, expected, fault, monkeypatch):
    requests, ref = expected
    engine = fresh_engine(fast)
    monkeypatch.setattr(engine, "_start_rows", break_refills(engine, fault))
    with torch.inference_mode():
        got, _ = engine.generate(requests)
    tokens = [g.tokens for g in got]
    # The first SLOTS rows never sit in a refilled slot: they still agree. Later rows do not.
    assert tokens[:SLOTS] == ref[:SLOTS]
    assert tokens[SLOTS:] != ref[SLOTS:]


@pytest.mark.parametrize("prompt", ["grounded-v1", "llama3-ms-clip-v1"])
def test_fast_backend_captions_like_the_transformers_backend(model_dir, prompt, caplog):
    inputs = chips(7)
    kw: dict[str, Any] = {"device": "cpu", "batch_size": SLOTS, "max_new_tokens": NEW_TOKENS}
    want = TransformersCaptioner(str(model_dir), prompt, **kw).caption_batch(inputs)
    cap = FastLlavaCaptioner(str(model_dir), prompt, **kw)
    # One chip's tiles ahead of the engine: the warm-up's re-reads find them dropped
    cap.tiles_ahead = 1
    with caplog.at_level(logging.INFO, logger="pipeline.caption.engines.captioner"):
        got = cap.caption_batch(inputs)
    rounds = [r.getMessage() for r in caplog.records if "waiting for image tiles" in r.getMessage()]
    assert len(rounds) == len(load_prompt(prompt).follow_ups()) + 1  # one line per turn
    assert rounds[0].startswith("fast engine: 7 chats in ") and "of 3 slots live" in rounds[0]
    turns = len(load_prompt(prompt).follow_ups()) + 1
    assert {r.finish_reason for r in want} == {"stop", "length"}
    for g, w in zip(got, want, strict=True):
        assert g.error_reason is None and g.caption is not None
        assert (g.sample_id, g.caption, g.finish_reason, g.qa) == (
            w.sample_id,
            w.caption,
            w.finish_reason,
            w.qa,
        )
        assert (g.prompt_tokens, g.completion_tokens) == (w.prompt_tokens, w.completion_tokens)
        assert len(g.qa) == turns - 1 and g.latency_s is not None and g.latency_s > 0


def test_prompts_and_tiles_are_the_processors(fast):
    """Later chips of an image size skip the image work in the prompt; nothing differs."""
    inputs = chips(4)
    wide = io.BytesIO()
    Image.fromarray(np.full((200, 300, 3), 90, dtype=np.uint8)).save(wide, format="PNG")
    inputs[2:] = [dataclasses.replace(x, rgb_png=wide.getvalue()) for x in inputs[2:]]
    for x in inputs:
        text = fast.processor.apply_chat_template(
            fast.prompt.first_turn(prompt_facts(x), fast.image_part(x.rgb_png)),
            add_generation_prompt=True,
            tokenize=False,
        )
        image = Image.open(io.BytesIO(x.rgb_png)).convert("RGB")
        want = fast.processor(text=[text], images=[image], return_tensors="pt")
        got = fast.request(text, x.rgb_png)
        assert torch.equal(got.input_ids, want["input_ids"][0])
        assert torch.equal(got.tiles(), want["pixel_values"][0])
        assert got.image_size == tuple(int(v) for v in want["image_sizes"][0])
    assert {(264, 264), (300, 200)} <= set(fast._image_tokens)  # the tokenizer-only path ran


def test_tiles_are_prepared_ahead_and_dropped_behind():
    calls: list[int] = []

    def job(i: int) -> Tensor:
        calls.append(i)
        return torch.full((1,), i)

    with ThreadPoolExecutor(2) as pool:
        tiles = TilesAhead(pool, [functools.partial(job, i) for i in range(10)], ahead=2)
        assert int(tiles.get(0)) == 0 and tiles.held == 3  # 0, and 1 and 2 ahead
        assert [int(tiles.get(i)) for i in range(1, 7)] == [1, 2, 3, 4, 5, 6]
        assert tiles.held == 5  # 4..8: two behind, two ahead
        assert int(tiles.get(0)) == 0  # dropped: prepared again, here
    assert sorted(calls) == [0, *range(9)]  # chip 9 was never started


def test_an_unreadable_image_fails_its_chip_only(model_dir):
    inputs = chips(3)
    inputs[1] = dataclasses.replace(inputs[1], rgb_png=b"not a png")
    cap = FastLlavaCaptioner(str(model_dir), "grounded-v1", device="cpu", max_new_tokens=4)
    results = cap.caption_batch(inputs)
    assert [r.caption is None for r in results] == [False, True, False]
    assert results[1].error_reason == "caption_error" and "turn 1" in str(results[1].error_message)


def test_a_round_smaller_than_the_slots_is_reported_once(model_dir, caplog):
    cap = FastLlavaCaptioner(str(model_dir), "grounded-v1", device="cpu", max_new_tokens=2)
    unreadable = [dataclasses.replace(c, rgb_png=b"not a png") for c in chips(2)]
    with caplog.at_level(logging.WARNING, logger="pipeline.caption.engines.captioner"):
        cap.caption_batch(unreadable)  # a round of 0 chats: nothing decodes, nothing to say
        cap.caption_batch(chips(3))
        cap.caption_batch(chips(2))
    said = [r.getMessage() for r in caplog.records if "slots" in r.getMessage()]
    assert said == [
        "fast engine: a round of 3 chats leaves 5 of 8 slots (captioner.batch_size) empty the "
        "whole round; a round is one shard's chats: output.shard_size of 8 fills every slot, "
        "and 32 (4 x batch_size) or more also keeps the drain at each round's end short"
    ]


def test_the_registry_builds_the_fast_backend_from_config(model_dir):
    config = CaptionerConfig(backend="fast", model=str(model_dir), device="cpu", batch_size=2)
    cap = make_captioner(config)
    assert isinstance(cap, FastLlavaCaptioner) and cap.name == f"fast:{model_dir}"
    assert cap.engine.slots == 2 and make_captioner(config) is cap  # built once per process
    with pytest.raises(ConfigError, match="greedily"):
        make_captioner(config.model_copy(update={"temperature": 0.7}))
