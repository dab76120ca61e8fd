"""The multispectral CLIP: transformers' ``CLIPModel`` with an N-band patch embedding.

Why transformers' CLIP classes and not open_clip: open_clip (and timm) require torchvision, and
no PyPI torchvision imports beside the CPU torch that eocap pins, so installing open_clip swaps
torch for a 5 GB CUDA build (../shared/notes/stack.md). ``CLIPVisionConfig(num_channels=N)``
gives the same ViT with an N-channel patch embedding, and OpenCLIP checkpoints are read and
written by mapping their state dict (:mod:`trainer.convert`), tested against a forward pass
written from open_clip's code. The exported folder loads in ``CLIPModel.from_pretrained``.

A model is an :class:`ArchSpec` (sizes: presets in :data:`ARCHS`), its bands, and its text
vocabulary. Weights come from scratch, an OpenCLIP file or a Hugging Face folder
(:mod:`trainer.checkpoints`); an RGB checkpoint's patch embedding is *inflated* to the bands by
one of :data:`INFLATIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel

from pipeline.dataset.bands import band_by_name

__all__ = [
    "ARCHS",
    "INFLATIONS",
    "RGB_BANDS",
    "ArchSpec",
    "MultispectralCLIP",
    "inflate_patch_embedding",
]

Inflation = Literal["rgb-copy-zero", "rgb-mean", "nearest-wavelength"]
INFLATIONS: tuple[Inflation, ...] = ("rgb-copy-zero", "rgb-mean", "nearest-wavelength")
"""How an RGB patch embedding becomes an N-band one (see :func:`inflate_patch_embedding`)."""

RGB_BANDS = ("B04", "B03", "B02")
"""The Sentinel-2 bands of an RGB checkpoint's input channels 0, 1, 2 (red, green, blue)."""


@dataclass(frozen=True)
class ArchSpec:
    """The sizes of a CLIP (OpenCLIP's model config, field for field where it has one).

    Attributes:
        image_size: Input side in pixels.
        patch_size: ViT patch side in pixels.
        vision_width: Vision transformer width.
        vision_layers: Vision transformer blocks.
        vision_heads: Vision attention heads (OpenCLIP: width / 64).
        text_width: Text transformer width.
        text_layers: Text transformer blocks.
        text_heads: Text attention heads.
        context_length: Text positions (CLIP: 77).
        vocab_size: Text vocabulary size (CLIP's BPE: 49,408).
        embed_dim: Joint embedding size.
        activation: ``gelu`` (LAION OpenCLIP models) or ``quick_gelu`` (OpenAI's).
    """

    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_layers: int
    text_heads: int
    context_length: int
    vocab_size: int
    embed_dim: int
    activation: Literal["gelu", "quick_gelu"] = "gelu"

    def with_updates(self, **changes: Any) -> ArchSpec:
        """A copy with some sizes changed."""
        return replace(self, **changes)


ARCHS: dict[str, ArchSpec] = {
    # OpenCLIP ViT-B-16 (model_configs/ViT-B-16.json), as laion2b_s34b_b88k and Llama3-MS-CLIP.
    "vit-b-16": ArchSpec(224, 16, 768, 12, 12, 512, 12, 8, 77, 49408, 512),
    # A CPU-sized model for the demo and tests: 64 px chips in 8 px patches; heads of width 64
    # as OpenCLIP (which is how a checkpoint's head count is read back).
    "tiny": ArchSpec(64, 8, 128, 4, 2, 128, 4, 2, 77, 49408, 128),
}
"""Named architectures (``model.arch`` in the train config)."""


def _clip_config(arch: ArchSpec, *, channels: int, eos_id: int, pad_id: int) -> CLIPConfig:
    text = {
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.text_width,
        "intermediate_size": 4 * arch.text_width,
        "num_hidden_layers": arch.text_layers,
        "num_attention_heads": arch.text_heads,
        "max_position_embeddings": arch.context_length,
        "hidden_act": arch.activation,
        "projection_dim": arch.embed_dim,
        # Not 2: transformers pools at the highest token id when eos_token_id == 2 (legacy).
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "bos_token_id": None,
    }
    vision = {
        "hidden_size": arch.vision_width,
        "intermediate_size": 4 * arch.vision_width,
        "num_hidden_layers": arch.vision_layers,
        "num_attention_heads": arch.vision_heads,
        "num_channels": channels,
        "image_size": arch.image_size,
        "patch_size": arch.patch_size,
        "hidden_act": arch.activation,
        "projection_dim": arch.embed_dim,
    }
    return CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=arch.embed_dim,
        logit_scale_init_value=math.log(1 / 0.07),
    )


class MultispectralCLIP(nn.Module):
    """A CLIP over ``bands`` with a learnable temperature (and a bias for the SigLIP loss).

    The temperature and bias start at the values of the loss trained with
    (:class:`trainer.loss.ContrastiveLoss`'s ``init_logit_scale`` and ``init_logit_bias``).

    Args:
        arch: Sizes.
        bands: ESA band names of the input channels, in order.
        eos_id: The text end token: its position's state is the text embedding.
        pad_id: The padding token id (after the end token; never attended, causal mask).
        init_logit_scale: Initial log-space temperature (the loss's; see :mod:`trainer.loss`).
        init_logit_bias: Initial learnable logit bias (SigLIP's); None: no bias.
        attn_implementation: transformers' attention kernel (``sdpa`` or ``eager``).
        vision_channels: Input channels of CLIP's patch embedding; None: one per band. (The
            modality-aware subclass, :class:`trainer.modal.ModalCLIP`, brings its own.)
    """

    def __init__(
        self,
        arch: ArchSpec,
        bands: Sequence[str],
        *,
        eos_id: int,
        pad_id: int = 0,
        init_logit_scale: float = math.log(1 / 0.07),
        init_logit_bias: float | None = None,
        attn_implementation: str = "sdpa",
        vision_channels: int | None = None,
    ) -> None:
        super().__init__()
        for name in bands:
            band_by_name(name)  # a KeyError names an unknown band now, not at the first batch
        self.arch = arch
        self.bands = tuple(bands)
        self.eos_id = eos_id
        self.pad_id = pad_id
        channels = len(self.bands) if vision_channels is None else vision_channels
        config = _clip_config(arch, channels=channels, eos_id=eos_id, pad_id=pad_id)
        config._attn_implementation = attn_implementation
        self.clip = CLIPModel(config)
        with torch.no_grad():
            self.clip.logit_scale.fill_(init_logit_scale)
        self.logit_bias: nn.Parameter | None = None
        if init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias)))

    @property
    def logit_scale(self) -> nn.Parameter:
        """Log of the inverse temperature (exp() is clamped to 100 in the loss, as OpenCLIP)."""
        return self.clip.logit_scale

    def describe(self) -> dict[str, Any]:
        """What rebuilds this model's skeleton (saved beside every checkpoint)."""
        return {
            "arch": asdict(self.arch),
            "bands": list(self.bands),
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "logit_bias": self.logit_bias is not None,
        }

    @classmethod
    def from_description(
        cls, described: dict[str, Any], *, attn_implementation: str = "sdpa"
    ) -> MultispectralCLIP:
        """The skeleton :meth:`describe` saved, with fresh weights."""
        return cls(
            ArchSpec(**described["arch"]),
            described["bands"],
            eos_id=int(described["eos_id"]),
            pad_id=int(described["pad_id"]),
            # the values come with the weights; only the bias's presence matters here
            init_logit_bias=0.0 if described["logit_bias"] else None,
            attn_implementation=attn_implementation,
        )

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute activations in the backward pass: less memory, about 30 % more compute."""
        if enabled:
            self.clip.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        else:
            self.clip.gradient_checkpointing_disable()  # type: ignore[no-untyped-call]

    def encode_image(self, pixels: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Image embeddings of ``pixels`` [B, len(bands), S, S] (normalised inputs)."""
        out = self.clip.get_image_features(pixel_values=pixels)
        features: torch.Tensor = out.pooler_output
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, input_ids: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Text embeddings of token ids [B, context_length] holding one ``eos_id`` each."""
        out = self.clip.get_text_features(input_ids=input_ids)
        features: torch.Tensor = out.pooler_output
        return F.normalize(features, dim=-1) if normalize else features

    def forward(
        self, pixels: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (image, text) embeddings of a batch of pairs."""
        return self.encode_image(pixels), self.encode_text(input_ids)


def inflate_patch_embedding(
    rgb_weight: torch.Tensor, bands: Sequence[str], strategy: Inflation
) -> torch.Tensor:
    """An N-band patch embedding from an RGB one (channels red, green, blue).

    - ``rgb-copy-zero`` (Llama3-MS-CLIP): zeros, with the blue, green and red kernels copied
      into the B02, B03 and B04 slots; every other band starts at zero and is learnt.
    - ``rgb-mean``: every band gets the mean RGB kernel, times 3 / N so that a scene equally
      bright in all bands gives the activation the RGB model gave.
    - ``nearest-wavelength``: every band gets the kernel of the RGB channel nearest in
      wavelength (B05..B12 take red's), times 3 / N for the same reason.

    Args:
        rgb_weight: [width, 3, patch, patch] in red, green, blue order.
        bands: The target bands.
        strategy: One of :data:`INFLATIONS`.

    Raises:
        ValueError: for an unknown strategy, a non-RGB weight, or ``rgb-copy-zero`` without
            any of B02, B03, B04 among ``bands``.
    """
    if rgb_weight.ndim != 4 or rgb_weight.shape[1] != 3:
        raise ValueError(
            f"expected an RGB patch embedding [w, 3, p, p], got {tuple(rgb_weight.shape)}"
        )
    n = len(bands)
    out = rgb_weight.new_zeros((rgb_weight.shape[0], n, *rgb_weight.shape[2:]))
    if strategy == "rgb-copy-zero":
        slots = [(bands.index(b), channel) for channel, b in enumerate(RGB_BANDS) if b in bands]
        if not slots:
            raise ValueError(
                f"rgb-copy-zero needs B02, B03 or B04 among the bands {list(bands)}: "
                "add them or use rgb-mean / nearest-wavelength"
            )
        for slot, channel in slots:
            out[:, slot] = rgb_weight[:, channel]
        return out
    if strategy == "rgb-mean":
        out[:] = rgb_weight.mean(dim=1, keepdim=True) * (3.0 / n)
        return out
    if strategy == "nearest-wavelength":
        rgb_waves = [band_by_name(b).center_wavelength for b in RGB_BANDS]
        for slot, name in enumerate(bands):
            wave = band_by_name(name).center_wavelength
            channel = min(range(3), key=lambda c: abs(rgb_waves[c] - wave))
            out[:, slot] = rgb_weight[:, channel] * (3.0 / n)
        return out
    raise ValueError(f"unknown inflation {strategy!r}: use one of {', '.join(INFLATIONS)}")
