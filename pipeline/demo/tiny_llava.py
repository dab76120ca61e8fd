"""A tiny, random-weight LLaVA-Next, built offline in seconds, for tests and the offline demo.

It has the real architecture of ``llava-hf/llama3-llava-next-8b-hf`` (CLIP vision tower, anyres
tiling, projector, Llama decoder, Llama-3-style chat template with an ``<image>`` token) at toy
size, and its own byte-level BPE tokenizer trained on a few sentences. Its text is random; its
mechanics (processor, chat template, image tokens, generation, serving) are the real ones, so
the OpenAI-compatible server (``transformers serve``) and the ``transformers`` backend run
against it exactly as against the production checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["TINY_MODEL_VERSION", "build_tiny_llava_next", "ensure_tiny_llava_next"]

TINY_MODEL_VERSION = "1"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}{{ '<image>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
"""The Llama-3 chat format of llama3-llava-next, with images as ``<image>`` placeholders."""

_CORPUS = [
    "The image is a satellite view of a rural area with fields, forest and a small town.",
    "A lake lies in the centre, a river flows through the south, roads cross the north.",
    "Clouds hide part of the view. Snow covers the mountains in winter.",
    "Describe the land cover, water, buildings and roads visible in this Sentinel-2 image.",
]


def build_tiny_llava_next(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny LLaVA-Next (model, processor, tokenizer, chat template) to ``out_dir``.

    Args:
        out_dir: Target folder (created).
        seed: Seed of the random weights.

    Returns:
        ``out_dir``, loadable with ``from_pretrained`` and servable by ``transformers serve``.
    """
    import tokenizers
    import torch
    import transformers

    # transformers is untyped; go through Any so strict mypy checks our code, not theirs.
    tf: Any = transformers
    tk: Any = tokenizers

    out_dir.mkdir(parents=True, exist_ok=True)
    specials = [
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<image>",
        "<pad>",
    ]
    bpe = tk.Tokenizer(tk.models.BPE())
    bpe.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<pad>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")

    image_processor = tf.LlavaNextImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
    )
    processor = tf.LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,  # the CLS token, dropped by the "default" strategy
    )
    vision = tf.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )
    text = tf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = tf.LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = tf.LlavaNextForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "eocap_tiny.json").write_text(json.dumps({"version": TINY_MODEL_VERSION}))
    return out_dir


def ensure_tiny_llava_next(out_dir: Path, **kwargs: Any) -> Path:
    """Build the tiny model into ``out_dir`` unless a build of this version is already there."""
    marker = out_dir / "eocap_tiny.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == TINY_MODEL_VERSION:
        return out_dir
    return build_tiny_llava_next(out_dir, **kwargs)
