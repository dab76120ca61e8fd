"""The model, its patch-embedding inflation, and OpenCLIP / Hugging Face checkpoints.

The OpenCLIP checks do not trust the name mapping: ``openclip_forward`` below recomputes the
embeddings from an OpenCLIP-named state dict the way open_clip's ``VisionTransformer`` and
``TextTransformer`` do (conv1, class token, ln_pre, residual blocks with a fused in_proj,
ln_post on the class token, ``@ proj``; causal text blocks, ln_final, the end token's state,
``@ text_projection``), written from open_clip's source without transformers.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPModel

from trainer.checkpoints import CheckpointError, build_model
from trainer.config import ModelConfig
from trainer.convert import from_openclip, to_openclip, unwrap_openclip_checkpoint
from trainer.model import ARCHS, MultispectralCLIP, inflate_patch_embedding
from trainer.text import TextTokenizer

BANDS_10 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def _tokenizer() -> TextTokenizer:
    return TextTokenizer.train(
        ["a forest beside a lake.", "cropland and a road. a town."] * 20, vocab_size=300
    )


def _rgb_model(tokenizer: TextTokenizer, seed: int = 0) -> MultispectralCLIP:
    torch.manual_seed(seed)
    arch = ARCHS["tiny"].with_updates(vocab_size=tokenizer.vocab_size, image_size=32)
    return MultispectralCLIP(arch, ("B04", "B03", "B02"), eos_id=tokenizer.end_id)


# -- an independent forward pass with OpenCLIP's tensor names ---------------------------------


def _block(x: torch.Tensor, sd: dict, prefix: str, heads: int, causal: bool) -> torch.Tensor:
    width = x.shape[-1]
    h = F.layer_norm(x, (width,), sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"])
    qkv = h @ sd[prefix + "attn.in_proj_weight"].t() + sd[prefix + "attn.in_proj_bias"]
    q, k, v = (
        t.reshape(x.shape[0], x.shape[1], heads, width // heads).transpose(1, 2)
        for t in qkv.chunk(3, dim=-1)
    )
    attn = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    attn = attn.transpose(1, 2).reshape(x.shape)
    x = x + attn @ sd[prefix + "attn.out_proj.weight"].t() + sd[prefix + "attn.out_proj.bias"]
    h = F.layer_norm(x, (width,), sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"])
    h = F.gelu(h @ sd[prefix + "mlp.c_fc.weight"].t() + sd[prefix + "mlp.c_fc.bias"])
    return x + h @ sd[prefix + "mlp.c_proj.weight"].t() + sd[prefix + "mlp.c_proj.bias"]


def _layers(sd: dict, prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})


def openclip_image(sd: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    conv = sd["visual.conv1.weight"]
    x = F.conv2d(pixels, conv, stride=conv.shape[-1]).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    width = x.shape[-1]
    x = F.layer_norm(x, (width,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    prefix = "visual.transformer.resblocks."
    for i in range(_layers(sd, prefix)):
        x = _block(x, sd, f"{prefix}{i}.", heads, causal=False)
    pooled = F.layer_norm(x[:, 0], (width,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"])
    return pooled @ sd["visual.proj"]


def openclip_text(sd: dict, ids: torch.Tensor, heads: int, eos_id: int) -> torch.Tensor:
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    prefix = "transformer.resblocks."
    for i in range(_layers(sd, prefix)):
        x = _block(x, sd, f"{prefix}{i}.", heads, causal=True)
    x = F.layer_norm(x, (x.shape[-1],), sd["ln_final.weight"], sd["ln_final.bias"])
    eos = (ids == eos_id).int().argmax(dim=-1)
    return x[torch.arange(len(ids)), eos] @ sd["text_projection"]


# -- tests --------------------------------------------------------------------------------


def test_rgb_copy_zero_puts_blue_green_red_kernels_in_b02_b03_b04():
    rgb = torch.stack([torch.full((4, 2, 2), float(c + 1)) for c in range(3)], dim=1)  # R=1,G=2,B=3
    out = inflate_patch_embedding(rgb, BANDS_10, "rgb-copy-zero")
    assert out.shape == (4, 10, 2, 2)
    assert out[:, 0].eq(3).all() and out[:, 1].eq(2).all() and out[:, 2].eq(1).all()  # B G R
    assert out[:, 3:].eq(0).all()


def test_rgb_mean_keeps_a_flat_scene_s_activation_and_nearest_copies_by_wavelength():
    rgb = torch.randn(4, 3, 2, 2)
    mean = inflate_patch_embedding(rgb, BANDS_10, "rgb-mean")
    # an all-ones scene: the RGB model's response is the sum of its three kernels
    assert torch.allclose(mean.sum(dim=1), rgb.sum(dim=1), atol=1e-5)
    assert torch.allclose(mean[:, 4], rgb.mean(dim=1) * 0.3)
    nearest = inflate_patch_embedding(rgb, BANDS_10, "nearest-wavelength")
    scale = 3 / 10
    assert torch.allclose(nearest[:, 0], rgb[:, 2] * scale)  # B02 <- blue
    assert torch.allclose(nearest[:, 1], rgb[:, 1] * scale)  # B03 <- green
    for slot in range(2, 10):  # B04 and every longer wavelength <- red
        assert torch.allclose(nearest[:, slot], rgb[:, 0] * scale)


def test_inflation_errors_name_the_fix():
    with pytest.raises(ValueError, match="rgb-mean"):
        inflate_patch_embedding(torch.zeros(4, 3, 2, 2), ("B11", "B12"), "rgb-copy-zero")
    with pytest.raises(ValueError, match="unknown inflation"):
        inflate_patch_embedding(torch.zeros(4, 3, 2, 2), BANDS_10, "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RGB patch embedding"):
        inflate_patch_embedding(torch.zeros(4, 10, 2, 2), BANDS_10, "rgb-mean")


def test_openclip_names_round_trip_and_compute_what_open_clip_computes():
    tokenizer = _tokenizer()
    model = _rgb_model(tokenizer).eval()
    state = model.state_dict()
    openclip = to_openclip(state)
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in openclip
    assert openclip["visual.proj"].shape == (128, 128)
    back = from_openclip(openclip)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)

    pixels = torch.randn(3, 3, 32, 32)
    ids = tokenizer.encode(["a forest beside a lake.", "a road", "a town"], 77)
    with torch.no_grad():
        ours_image = model.encode_image(pixels, normalize=False)
        ours_text = model.encode_text(ids, normalize=False)
        ref_image = openclip_image(openclip, pixels, heads=2)
        ref_text = openclip_text(openclip, ids, heads=2, eos_id=tokenizer.end_id)
    assert torch.allclose(ours_image, ref_image, atol=1e-4)
    assert torch.allclose(ours_text, ref_text, atol=1e-4)


def test_build_model_from_an_openclip_training_checkpoint_inflates_to_the_bands(tmp_path: Path):
    tokenizer = _tokenizer()
    rgb = _rgb_model(tokenizer, seed=1).eval()
    openclip = to_openclip(rgb.state_dict())
    # OpenCLIP training checkpoints wrap the state and prefix DDP keys with "module."
    path = tmp_path / "epoch_32.pt"
    torch.save({"epoch": 32, "state_dict": {f"module.{k}": v for k, v in openclip.items()}}, path)
    config = ModelConfig(init="openclip", checkpoint=str(path), tokenizer="clip", image_size=64)
    model = build_model(
        config, BANDS_10, tokenizer, init_logit_scale=0.0, init_logit_bias=None, seed=0
    ).eval()
    patch = model.state_dict()["clip.vision_model.embeddings.patch_embedding.weight"]
    rgb_patch = rgb.state_dict()["clip.vision_model.embeddings.patch_embedding.weight"]
    assert torch.equal(patch[:, 0], rgb_patch[:, 2]) and patch[:, 3:].eq(0).all()
    # 32 -> 64 px: the 4x4 position grid is interpolated to 8x8
    positions = model.state_dict()["clip.vision_model.embeddings.position_embedding.weight"]
    assert positions.shape == (1 + 8 * 8, 128)
    # the text tower and the learnt temperature are the checkpoint's
    ids = tokenizer.encode(["a forest"], 77)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(ids), rgb.encode_text(ids), atol=1e-6)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_build_model_from_safetensors_and_from_a_hugging_face_folder(tmp_path: Path):
    tokenizer = _tokenizer()
    rgb = _rgb_model(tokenizer, seed=2).eval()
    save_file(to_openclip(rgb.state_dict()), str(tmp_path / "w.safetensors"))
    rgb.clip.save_pretrained(str(tmp_path / "hf"))
    pixels = torch.randn(2, 3, 32, 32)
    for init, checkpoint in (("openclip", "w.safetensors"), ("hf", "hf")):
        config = ModelConfig(init=init, checkpoint=str(tmp_path / checkpoint), tokenizer="clip")
        model = build_model(
            config,
            ("B04", "B03", "B02"),
            tokenizer,
            init_logit_scale=0.0,
            init_logit_bias=None,
            seed=0,
        ).eval()
        with torch.no_grad():
            assert torch.allclose(model.encode_image(pixels), rgb.encode_image(pixels), atol=1e-5)


def test_checkpoint_errors_are_one_line_with_the_fix(tmp_path: Path):
    tokenizer = _tokenizer()
    missing = ModelConfig(init="openclip", checkpoint=str(tmp_path / "nope.pt"), tokenizer="clip")
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model(missing, BANDS_10, tokenizer, init_logit_scale=0, init_logit_bias=None, seed=0)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    bad = ModelConfig(init="openclip", checkpoint=str(garbage), tokenizer="clip")
    with pytest.raises(CheckpointError, match="cannot read openclip checkpoint"):
        build_model(bad, BANDS_10, tokenizer, init_logit_scale=0, init_logit_bias=None, seed=0)
    path = tmp_path / "w.safetensors"
    save_file(to_openclip(_rgb_model(tokenizer).state_dict()), str(path))
    clip_vocab = ModelConfig(init="openclip", checkpoint=str(path), tokenizer="clip")
    with pytest.raises(CheckpointError, match="vocabulary"):
        build_model(
            clip_vocab,
            BANDS_10,
            TextTokenizer.clip(),
            init_logit_scale=0,
            init_logit_bias=None,
            seed=0,
        )
    with pytest.raises(ValueError, match="only ViT CLIPs"):
        from_openclip({"visual.trunk.stem.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="not a tensor"):
        unwrap_openclip_checkpoint({"state_dict": {"a": 1}})


def test_hugging_face_clip_loads_an_n_band_model_with_the_same_embeddings(tmp_path: Path):
    tokenizer = _tokenizer()
    torch.manual_seed(3)
    arch = ARCHS["tiny"].with_updates(vocab_size=tokenizer.vocab_size, image_size=32)
    model = MultispectralCLIP(arch, BANDS_10, eos_id=tokenizer.end_id).eval()
    model.clip.save_pretrained(str(tmp_path))
    loaded = CLIPModel.from_pretrained(str(tmp_path), local_files_only=True).eval()
    pixels = torch.randn(2, 10, 32, 32)
    ids = tokenizer.encode(["a lake", "a town. a road."], 77)
    with torch.no_grad():
        assert torch.allclose(
            loaded.get_image_features(pixel_values=pixels).pooler_output,
            model.encode_image(pixels, normalize=False),
            atol=1e-6,
        )
        assert torch.allclose(
            loaded.get_text_features(input_ids=ids).pooler_output,
            model.encode_text(ids, normalize=False),
            atol=1e-6,
        )


def test_gradient_checkpointing_gives_the_same_gradients():
    tokenizer = _tokenizer()
    model = _rgb_model(tokenizer).train()
    pixels = torch.randn(2, 3, 32, 32)
    ids = tokenizer.encode(["a lake", "a town"], 77)

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        image, text = model(pixels, ids)
        (image @ text.t()).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = grads()
    model.set_gradient_checkpointing(True)
    assert model.clip.is_gradient_checkpointing
    checkpointed = grads()
    model.set_gradient_checkpointing(False)
    assert len(plain) == len(checkpointed) > 10
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed, strict=True))
