"""The modality-aware vision tower: any subset of Sentinel-2 bands and Sentinel-1 polarisations.

One model that embeds S2 only, S1 only, both, or S2 with bands missing (issue 14, after
Jungbluth, Allen et al., 2023, arXiv 2310.00119, whose single CLIP/ViT took S2, S1 amplitude
and coherence and kept working with modalities or channels missing at inference; the paper's
tokenisation is not restated here, only that property is).

Design (:class:`ModalCLIP`):

- **One patch embedding per modality** (a ``patch x patch`` conv over that modality's
  channels) into **one transformer**: CLIP's own vision encoder, pre/post layer norms, class
  token and projection, and CLIP's text tower unchanged. Per-channel tokens (ChannelViT, Bao
  et al. 2023, arXiv 2309.16108: one token per channel and patch, with learned channel
  embeddings) make the sequence 12x longer for S2+S1 and attention ~150x dearer at ViT-B/16;
  a per-modality conv keeps the sequence at ``1 + modalities x patches`` (2x) and keeps S2's
  conv the shape an RGB checkpoint inflates into (:func:`trainer.model.inflate_patch_embedding`).
  DOFA (Xiong et al. 2024, arXiv 2403.15356) generates the patch kernel from wavelengths by a
  hypernetwork; SAR has no wavelength per channel, so learned embeddings are used instead.
- **Missing channels**: a channel is absent for a sample when it is NaN over the whole chip (or
  marked so by ``present``). Absent channels enter the conv as zeros and the sample's input to
  that conv is rescaled by ``channels / present`` (as inverted dropout), so the activation scale
  does not depend on how many bands there are; the **channel embeddings** of the present
  channels are summed and added to that modality's patch tokens, which tells the transformer
  which bands made the token (ChannelViT's channel embedding, pooled over the conv's channels).
- **Missing modalities**: each modality's tokens carry a learned **modality embedding**; the
  **positional embeddings** are CLIP's, shared by the modalities (patch ``i`` of S2 and of S1
  cover the same ground: the chips share one grid). A modality with no present channel is
  masked out of attention as keys (the encoder's ``attention_mask``), per sample, so a batch
  mixes S2-only, S1-only and both, and a sample's embedding does not depend on an absent
  modality at all (tested).
- **Training**: :func:`input_dropout` drops a whole modality of a sample that has two
  (``train.modality_dropout``, never the last one) and single channels
  (``train.channel_dropout``, at least one kept per modality), by marking them absent.

Inputs are one tensor ``[B, channels, S, S]`` in :class:`ChannelLayout` order (S2 bands, then
S1 polarisations), normalised, absent channels NaN (:func:`trainer.data.modal_input` builds it
from raw DN and hundredths of dB), so the training step, DDP and evaluation call
``encode_image(pixels)`` as for :class:`~trainer.model.MultispectralCLIP`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.dataset.loader import COHERENCE_CHANNELS
from trainer.model import ArchSpec, MultispectralCLIP

__all__ = [
    "COHERENCE_NORMALISATION",
    "MODALITIES",
    "SAR_DB_STATS",
    "ChannelLayout",
    "ModalCLIP",
    "channels_present",
    "input_dropout",
    "mark_absent",
    "model_from_description",
]

MODALITIES = ("s2", "s1", "coh")
"""The modalities by name, in channel order: Sentinel-2 L2A bands, Sentinel-1 backscatter,
Sentinel-1 interferometric coherence (one channel, ``COH``)."""

COHERENCE_NORMALISATION: tuple[float, float] = (0.5, 0.25)
"""(centre, spread) coherence is normalised by: a fixed map of 0..1 onto -2..2, not statistics
of data (coherence is bounded and has no per-catalog unit to learn)."""

SAR_DB_STATS: dict[str, tuple[float, float]] = {
    "VV": (-12.54847273, 5.25697717),
    "VH": (-20.19237134, 5.91150917),
}
"""Default (mean, std) of Sentinel-1 backscatter in dB per polarisation: SSL4EO-S12's, from 50k
global S1 GRD chips (Wang et al. 2022). A band statistics file with ``VV``/``VH`` entries (in
dB) replaces them."""


@dataclass(frozen=True)
class ChannelLayout:
    """The modalities of a model and each one's channels, in input order.

    Attributes:
        groups: ``(modality, channel names)`` pairs, in :data:`MODALITIES` order.
    """

    groups: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def of(
        cls, modalities: Sequence[str], bands: Sequence[str], polarisations: Sequence[str]
    ) -> ChannelLayout:
        """The layout of ``modalities`` with S2 ``bands`` and S1 ``polarisations``.

        Coherence (``coh``) has its one channel, ``COH``.

        Raises:
            ValueError: for an unknown modality, or a selected modality without channels.
        """
        unknown = sorted(set(modalities) - set(MODALITIES))
        if unknown or not modalities:
            raise ValueError(f"modalities {list(modalities)}: use some of {list(MODALITIES)}")
        channels = {"s2": tuple(bands), "s1": tuple(polarisations), "coh": COHERENCE_CHANNELS}
        groups = tuple((m, channels[m]) for m in MODALITIES if m in modalities)
        for modality, names in groups:
            if not names:
                raise ValueError(f"modality {modality} has no channels")
        return cls(groups)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities, in order."""
        return tuple(m for m, _ in self.groups)

    @property
    def channels(self) -> tuple[str, ...]:
        """Every channel name, in input order."""
        return tuple(name for _, names in self.groups for name in names)

    def slices(self) -> Iterator[tuple[str, slice]]:
        """Each modality with its channels' slice of the input."""
        start = 0
        for modality, names in self.groups:
            yield modality, slice(start, start + len(names))
            start += len(names)

    def channels_of(self, modality: str) -> tuple[str, ...]:
        """The channels of ``modality`` (none when the layout lacks it)."""
        return dict(self.groups).get(modality, ())

    def selection(
        self, modalities: Sequence[str] | None = None, drop: Sequence[str] = ()
    ) -> torch.Tensor:
        """Which channels inference uses: ``[channels]`` bool, of ``modalities`` less ``drop``.

        Raises:
            ValueError: for a modality or channel the model does not have, or a selection
                that leaves nothing.
        """
        chosen = self.modalities if modalities is None else tuple(modalities)
        unknown = sorted(set(chosen) - set(self.modalities))
        if unknown:
            raise ValueError(
                f"the model has modalities {','.join(self.modalities)}, not {','.join(unknown)}"
            )
        missing = sorted(set(drop) - set(self.channels))
        if missing:
            raise ValueError(
                f"cannot drop {','.join(missing)}: the model's channels are "
                f"{','.join(self.channels)}"
            )
        keep = torch.tensor(
            [m in chosen and name not in drop for m, names in self.groups for name in names]
        )
        if not keep.any():
            raise ValueError("the selection leaves no channel to embed")
        return keep

    def to_dict(self) -> dict[str, list[str]]:
        """``{modality: [channels]}`` (JSON, in order)."""
        return {m: list(names) for m, names in self.groups}

    @classmethod
    def from_dict(cls, saved: Mapping[str, Sequence[str]]) -> ChannelLayout:
        """The layout :meth:`to_dict` wrote."""
        return cls(tuple((m, tuple(names)) for m, names in saved.items()))


def channels_present(pixels: torch.Tensor) -> torch.Tensor:
    """``[B, C]`` bool: the channels of ``pixels`` [B, C, H, W] not NaN over the whole chip."""
    return ~torch.isnan(pixels).flatten(2).all(dim=-1)


def mark_absent(pixels: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``pixels`` with the channels not ``present`` ([B, C] or [C] bool) set to NaN."""
    absent = ~present.to(pixels.device)
    return pixels.masked_fill(absent[..., None, None], math.nan)


def input_dropout(
    pixels: torch.Tensor,
    layout: ChannelLayout,
    *,
    modality_p: float,
    channel_p: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training inputs with random modalities and channels marked absent (NaN).

    A sample with two or more modalities present loses one of them, chosen uniformly, with
    probability ``modality_p``; then each present channel is dropped with probability
    ``channel_p``, and a modality that would lose all its channels keeps one at random. So a
    sample never loses its last modality nor a modality its last channel. Draws use
    ``generator`` (default: torch's global one, which the training checkpoints capture).
    """
    present = channels_present(pixels).cpu()
    keep = present.clone()
    slices = [s for _, s in layout.slices()]
    if modality_p > 0 and len(slices) > 1:
        has = torch.stack([present[:, s].any(dim=1) for s in slices], dim=1)
        drawn = torch.rand(len(keep), generator=generator) < modality_p
        for row in torch.nonzero(drawn & (has.sum(dim=1) > 1)).flatten().tolist():
            options = torch.nonzero(has[row]).flatten()
            pick = int(options[torch.randint(len(options), (1,), generator=generator)])
            keep[row, slices[pick]] = False
    if channel_p > 0:
        before = keep
        keep = before & ~(torch.rand(keep.shape, generator=generator) < channel_p)
        for s in slices:
            emptied = before[:, s].any(dim=1) & ~keep[:, s].any(dim=1)
            for row in torch.nonzero(emptied).flatten().tolist():
                options = torch.nonzero(before[row, s]).flatten()
                pick = int(options[torch.randint(len(options), (1,), generator=generator)])
                keep[row, s.start + pick] = True
    return mark_absent(pixels, keep)


class ModalCLIP(MultispectralCLIP):
    """A CLIP whose vision tower takes any subset of its modalities' channels (module doc).

    ``bands`` (from :class:`MultispectralCLIP`) are the S2 bands; :attr:`layout` has every
    channel. The text tower, temperature and bias are :class:`MultispectralCLIP`'s.

    Args:
        arch: Sizes.
        layout: Modalities and their channels.
        eos_id: The text end token.
        pad_id: The padding token id.
        init_logit_scale: Initial log-space temperature.
        init_logit_bias: Initial SigLIP logit bias; None: no bias.
        attn_implementation: transformers' attention kernel (``sdpa`` or ``eager``).
    """

    def __init__(
        self,
        arch: ArchSpec,
        layout: ChannelLayout,
        *,
        eos_id: int,
        pad_id: int = 0,
        init_logit_scale: float = math.log(1 / 0.07),
        init_logit_bias: float | None = None,
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__(
            arch,
            layout.channels_of("s2"),
            eos_id=eos_id,
            pad_id=pad_id,
            init_logit_scale=init_logit_scale,
            init_logit_bias=init_logit_bias,
            attn_implementation=attn_implementation,
            vision_channels=1,
        )
        self.layout = layout
        # CLIP's single patch embedding gives way to one per modality (an unused parameter
        # would also stop DDP).
        del self.clip.vision_model.embeddings.patch_embedding
        width, patch = arch.vision_width, arch.patch_size
        self.patch_embeddings = nn.ModuleDict(
            {
                m: nn.Conv2d(len(names), width, patch, stride=patch, bias=False)
                for m, names in layout.groups
            }
        )
        # Small random starts, as CLIP's positional embeddings (std 0.02 at initializer_range).
        self.modality_embeddings = nn.Parameter(torch.randn(len(layout.groups), width) * 0.02)
        self.channel_embeddings = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(len(names), width) * 0.02) for m, names in layout.groups}
        )

    def describe(self) -> dict[str, Any]:
        """:meth:`MultispectralCLIP.describe` plus the modalities and their channels."""
        return {**super().describe(), "modalities": self.layout.to_dict()}

    @classmethod
    def from_description(
        cls, described: dict[str, Any], *, attn_implementation: str = "sdpa"
    ) -> ModalCLIP:
        """The skeleton :meth:`describe` saved, with fresh weights."""
        return cls(
            ArchSpec(**described["arch"]),
            ChannelLayout.from_dict(described["modalities"]),
            eos_id=int(described["eos_id"]),
            pad_id=int(described["pad_id"]),
            init_logit_bias=0.0 if described["logit_bias"] else None,
            attn_implementation=attn_implementation,
        )

    def _key_mask(self, attend: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The encoder's attention mask from ``attend`` [B, T] (keys a query may see)."""
        keys = attend[:, None, None, :]
        if self.clip.vision_model.config._attn_implementation == "sdpa":
            return keys  # SDPA takes a boolean mask: True attends
        return torch.zeros(keys.shape, dtype=dtype, device=keys.device).masked_fill(
            ~keys, torch.finfo(dtype).min
        )

    def encode_image(
        self,
        pixels: torch.Tensor,
        *,
        normalize: bool = True,
        present: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image embeddings of ``pixels`` [B, len(layout.channels), S, S] (normalised inputs).

        Args:
            pixels: The channels in :attr:`layout` order; absent ones NaN over the chip.
            normalize: L2-normalise the embeddings.
            present: ``[B, C]`` bool, which channels each sample has; None: those not NaN.
        """
        vision = self.clip.vision_model
        if present is None:
            present = channels_present(pixels)
        values = torch.nan_to_num(pixels, nan=0.0)
        positions = vision.embeddings.position_embedding.weight
        batch = pixels.shape[0]
        parts = [(vision.embeddings.class_embedding + positions[0]).expand(batch, 1, -1)]
        attend = [present.new_ones(batch, 1)]
        for index, (modality, channels) in enumerate(self.layout.slices()):
            mask = present[:, channels]
            count = mask.sum(dim=1)
            scale = mask.shape[1] / count.clamp(min=1)
            weight = (mask * scale[:, None]).to(values.dtype)[..., None, None]
            tokens = self.patch_embeddings[modality](values[:, channels] * weight)
            tokens = tokens.flatten(2).transpose(1, 2)
            extra = self.modality_embeddings[index] + mask.to(tokens.dtype) @ (
                self.channel_embeddings[modality].to(tokens.dtype)
            )
            parts.append(tokens + positions[1:] + extra[:, None, :])
            attend.append((count > 0)[:, None].expand(-1, tokens.shape[1]))
        hidden = vision.pre_layrnorm(torch.cat(parts, dim=1))
        encoded = vision.encoder(
            inputs_embeds=hidden, attention_mask=self._key_mask(torch.cat(attend, 1), hidden.dtype)
        )
        pooled = vision.post_layernorm(encoded.last_hidden_state[:, 0])
        features: torch.Tensor = self.clip.visual_projection(pooled)
        return F.normalize(features, dim=-1) if normalize else features


def model_from_description(
    described: dict[str, Any], *, attn_implementation: str = "sdpa"
) -> MultispectralCLIP:
    """The skeleton a checkpoint or model folder describes: modality-aware or plain."""
    if "modalities" in described:
        return ModalCLIP.from_description(described, attn_implementation=attn_implementation)
    return MultispectralCLIP.from_description(described, attn_implementation=attn_implementation)
