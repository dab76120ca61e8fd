"""OpenCLIP state dicts to and from transformers' ``CLIPModel`` state dicts, by name.

The two implementations compute the same function with differently named (and partly fused)
tensors. OpenCLIP (``open_clip/transformer.py`` and ``model.py``, the ``VisionTransformer``
and ``TextTransformer`` of ViT models):

==========================================  ===============================================
OpenCLIP                                    transformers ``CLIPModel``
==========================================  ===============================================
``visual.conv1.weight``                     ``vision_model.embeddings.patch_embedding.weight``
``visual.class_embedding``                  ``vision_model.embeddings.class_embedding``
``visual.positional_embedding``             ``vision_model.embeddings.position_embedding.weight``
``visual.ln_pre``                           ``vision_model.pre_layrnorm``
``visual.transformer.resblocks.i``          ``vision_model.encoder.layers.i``
``visual.ln_post``                          ``vision_model.post_layernorm``
``visual.proj`` [width, embed]              ``visual_projection.weight`` [embed, width] (transposed)
``token_embedding.weight``                  ``text_model.embeddings.token_embedding.weight``
``positional_embedding``                    ``text_model.embeddings.position_embedding.weight``
``transformer.resblocks.i``                 ``text_model.encoder.layers.i``
``ln_final``                                ``text_model.final_layer_norm``
``text_projection`` [width, embed]          ``text_projection.weight`` (transposed)
``logit_scale``                             ``logit_scale``
``logit_bias`` (SigLIP models)              ``logit_bias`` (:class:`MultispectralCLIP`'s own)
==========================================  ===============================================

and inside each block ``ln_1``/``ln_2`` = ``layer_norm1``/``layer_norm2``,
``mlp.c_fc``/``mlp.c_proj`` = ``mlp.fc1``/``mlp.fc2``, ``attn.out_proj`` =
``self_attn.out_proj``, and the fused
``attn.in_proj_weight`` [3w, w] (``in_proj_bias`` [3w]) = ``self_attn.q_proj``, ``k_proj``,
``v_proj`` stacked in that order (``nn.MultiheadAttention``'s layout). Keys are those of
:class:`trainer.model.MultispectralCLIP`'s ``state_dict`` (``clip.`` prefix).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["from_openclip", "to_openclip", "unwrap_openclip_checkpoint"]

_TOWERS = (
    ("visual.transformer.resblocks.", "clip.vision_model.encoder.layers."),
    ("transformer.resblocks.", "clip.text_model.encoder.layers."),
)

_BLOCK = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
}

_PLAIN = {
    "visual.conv1.weight": "clip.vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "clip.vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "clip.vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "clip.vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "clip.vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "clip.vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "clip.vision_model.post_layernorm.bias",
    "token_embedding.weight": "clip.text_model.embeddings.token_embedding.weight",
    "positional_embedding": "clip.text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "clip.text_model.final_layer_norm.weight",
    "ln_final.bias": "clip.text_model.final_layer_norm.bias",
    "logit_scale": "clip.logit_scale",
    "logit_bias": "logit_bias",
}

_TRANSPOSED = {
    "visual.proj": "clip.visual_projection.weight",
    "text_projection": "clip.text_projection.weight",
}

# Buffers OpenCLIP saved in some versions; recomputed by both implementations.
_IGNORED = {"attn_mask", "visual.attn_mask"}


def unwrap_openclip_checkpoint(loaded: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The model state of an OpenCLIP file: a bare state dict, or a training checkpoint.

    OpenCLIP's training checkpoints hold ``{"epoch", "state_dict", "optimizer", ...}`` and,
    from DDP runs, keys prefixed ``module.``; both are unwrapped.
    """
    state = loaded.get("state_dict", loaded)
    if not isinstance(state, Mapping):
        raise ValueError("not an OpenCLIP checkpoint: no state dict inside")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"not an OpenCLIP state dict: {key!r} is not a tensor")
        out[key.removeprefix("module.")] = value
    return out


def from_openclip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A :class:`~trainer.model.MultispectralCLIP` state dict from an OpenCLIP ViT CLIP's.

    Raises:
        ValueError: naming a key that no ViT CLIP has (a ResNet, CoCa or timm tower).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _IGNORED:
            continue
        if key in _PLAIN:
            out[_PLAIN[key]] = value
            continue
        if key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
            continue
        for prefix, target in _TOWERS:
            match = re.fullmatch(re.escape(prefix) + r"(\d+)\.(.+)", key)
            if match is None:
                continue
            block, rest = f"{target}{match.group(1)}.", match.group(2)
            if rest in _BLOCK:
                out[block + _BLOCK[rest]] = value
            elif rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]
                for part, name in zip(value.chunk(3, dim=0), ("q", "k", "v"), strict=True):
                    out[f"{block}self_attn.{name}_proj.{kind}"] = part.contiguous()
            else:
                raise ValueError(f"unexpected OpenCLIP key {key!r}: only ViT CLIPs are supported")
            break
        else:
            raise ValueError(f"unexpected OpenCLIP key {key!r}: only ViT CLIPs are supported")
    return out


def to_openclip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The OpenCLIP state dict of a :class:`~trainer.model.MultispectralCLIP` state dict."""
    plain = {v: k for k, v in _PLAIN.items()}
    transposed = {v: k for k, v in _TRANSPOSED.items()}
    block = {v: k for k, v in _BLOCK.items()}
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in plain:
            out[plain[key]] = value
            continue
        if key in transposed:
            out[transposed[key]] = value.t().contiguous()
            continue
        for prefix, source in _TOWERS:
            match = re.fullmatch(re.escape(source) + r"(\d+)\.(.+)", key)
            if match is None:
                continue
            target, rest = f"{prefix}{match.group(1)}.", match.group(2)
            if rest in block:
                out[target + block[rest]] = value
                break
            attn = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
            if attn is None:
                raise ValueError(f"unexpected model key {key!r}")
            fused.setdefault(f"{target}attn.in_proj_{attn.group(2)}", {})[attn.group(1)] = value
            break
        else:
            raise ValueError(f"unexpected model key {key!r}")
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out
