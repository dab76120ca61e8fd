"""Contrastive image-text losses: symmetric InfoNCE (CLIP) and the sigmoid loss (SigLIP).

Conventions follow OpenCLIP's ``src/open_clip/loss.py`` (mlfoundations/open_clip at commit
89fb801f), so that a model trained here behaves like one trained there:

- The model owns the learnable temperature as a log-space parameter ``t'`` and passes the
  multiplier ``logit_scale = exp(t')`` to the loss, with L2-normalised features. After every
  optimizer step the trainer clamps ``t'`` into ``[0, ln 100]`` in place
  (:func:`clamp_logit_scale_`), as OpenCLIP's training loop does ("we clamp to 4.6052 = ln(100),
  as in the original paper"). Clamping the parameter rather than the value in the forward pass
  keeps its gradient alive: a forward clamp would zero it for good once ``t'`` passed ln 100.
- Initial values are attributes of each loss class, so the model builds its parameters from the
  loss it is trained with: CLIP ``t' = ln(1 / 0.07)``, no bias; SigLIP ``t' = ln 10`` and a
  learnable bias ``b = -10`` (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training").
- Under ``torch.distributed`` with more than one rank, features are all-gathered *with
  gradients* and each rank scores its own images (and, for CLIP, its own texts) against the
  whole global batch, with positives offset by ``rank * local_batch`` (OpenCLIP's
  ``local_loss=True, gather_with_grad=True``). Each rank's loss is the mean over its own rows, so
  the mean of the rank losses is the loss of the concatenated global batch, and DDP's averaging
  of parameter gradients gives that loss's gradient. (The backward of the gather sums every
  rank's contribution into each rank's slice: the gradient reaching a rank's features is
  ``world_size`` times the global loss's gradient, which DDP's division by ``world_size``
  undoes.) Every rank must hold the same number of pairs (a sampler with ``drop_last``).
- The gather is ``torch.distributed._functional_collectives.all_gather_single``, whose backward is
  a reduce-scatter: the replacement torch 2.13 names when it deprecates
  ``torch.distributed.nn.functional.all_gather`` (which OpenCLIP also prefers when available).
- SigLIP gathers only the text features (OpenCLIP's ``dist_impl="gather"`` in one matrix, not
  its neighbour-exchange variants): each rank computes its ``local x global`` block of the
  ``B x B`` pair matrix.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import _functional_collectives as functional_collectives

MAX_LOGIT_SCALE = 100.0
"""Upper bound of the logit multiplier ``exp(t')`` (CLIP, OpenCLIP)."""


def clamp_logit_scale_(log_logit_scale: Tensor) -> None:
    """Clamp the model's log-space temperature into ``[0, ln MAX_LOGIT_SCALE]``, in place.

    Call after each optimizer step, as OpenCLIP does.

    Args:
        log_logit_scale: The learnable ``t'`` (``logit_scale = exp(t')``).
    """
    with torch.no_grad():
        log_logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))


def _rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_with_grad(features: Tensor) -> Tensor:
    """All ranks' features concatenated in rank order; gradients flow back to their ranks."""
    group = dist.group.WORLD
    if group is None:
        raise RuntimeError("gathering features needs an initialised torch.distributed group")
    return functional_collectives.all_gather_single(features.contiguous(), 0, group)


def _global_features(features: Tensor, world_size: int) -> Tensor:
    return _gather_with_grad(features) if world_size > 1 else features


class ContrastiveLoss(nn.Module, ABC):
    """An image-text contrastive loss over a batch of paired, L2-normalised embeddings.

    Row ``i`` of the image features and row ``i`` of the text features are a positive pair;
    every other pairing in the (global) batch is a negative.
    """

    init_logit_scale: ClassVar[float]
    """Initial log-space temperature ``t'`` of the model's ``logit_scale`` parameter."""
    init_logit_bias: ClassVar[float | None]
    """Initial value of the model's learnable logit bias; None when the loss takes no bias."""

    @abstractmethod
    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
    ) -> Tensor:
        """The loss of this rank's pairs against the global batch.

        Args:
            image_features: L2-normalised image embeddings, shape ``[n, D]``.
            text_features: L2-normalised text embeddings of the same pairs, shape ``[n, D]``.
            logit_scale: The multiplier ``exp(t')``, a scalar tensor.
            logit_bias: The learnable bias, a scalar tensor, for losses that take one.

        Returns:
            A scalar loss.
        """


class ClipLoss(ContrastiveLoss):
    """Symmetric InfoNCE: cross-entropy image->text and text->image, averaged.

    Softmax cross-entropy is invariant to a constant added to the logits, so it takes no bias.
    """

    init_logit_scale = math.log(1 / 0.07)
    init_logit_bias = None

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
    ) -> Tensor:
        """The symmetric InfoNCE loss of this rank's pairs against the global batch.

        Args:
            image_features: L2-normalised image embeddings, shape ``[n, D]``.
            text_features: L2-normalised text embeddings of the same pairs, shape ``[n, D]``.
            logit_scale: The multiplier ``exp(t')``, a scalar tensor.
            logit_bias: Must be None.

        Returns:
            A scalar loss.

        Raises:
            ValueError: If a bias is given.
        """
        if logit_bias is not None:
            raise ValueError("ClipLoss takes no logit bias: softmax cross-entropy ignores it")
        rank, world_size = _rank_and_world_size()
        all_image_features = _global_features(image_features, world_size)
        all_text_features = _global_features(text_features, world_size)
        logits_per_image = logit_scale * image_features @ all_text_features.T
        logits_per_text = logit_scale * text_features @ all_image_features.T
        n_local = image_features.shape[0]
        labels = torch.arange(n_local, device=image_features.device) + rank * n_local
        return (
            F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
        ) / 2


class SigLipLoss(ContrastiveLoss):
    """Sigmoid loss: every (image, text) pair is an independent binary classification.

    ``-1/n * sum_ij log sigmoid(z_ij * (logit_scale * x_i . y_j + logit_bias))`` with
    ``z_ij = 1`` for the positive pairs and ``-1`` otherwise, summed over this rank's images and
    all texts of the global batch.
    """

    init_logit_scale = math.log(10.0)
    init_logit_bias = -10.0

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
    ) -> Tensor:
        """The sigmoid loss of this rank's images against all texts of the global batch.

        Args:
            image_features: L2-normalised image embeddings, shape ``[n, D]``.
            text_features: L2-normalised text embeddings of the same pairs, shape ``[n, D]``.
            logit_scale: The multiplier ``exp(t')``, a scalar tensor.
            logit_bias: The learnable bias, a scalar tensor.

        Returns:
            A scalar loss.

        Raises:
            ValueError: If no bias is given.
        """
        if logit_bias is None:
            raise ValueError("SigLipLoss needs the learnable logit bias")
        rank, world_size = _rank_and_world_size()
        all_text_features = _global_features(text_features, world_size)
        logits = logit_scale * image_features @ all_text_features.T + logit_bias
        n_local = image_features.shape[0]
        rows = torch.arange(n_local, device=image_features.device)
        signs = -torch.ones_like(logits)
        signs[rows, rows + rank * n_local] = 1.0
        return -F.logsigmoid(signs * logits).sum() / n_local


LOSSES: dict[str, type[ContrastiveLoss]] = {"clip": ClipLoss, "siglip": SigLipLoss}
"""The contrastive losses by their configuration name."""


def contrastive_loss(name: str) -> ContrastiveLoss:
    """The contrastive loss a configuration names.

    Args:
        name: ``"clip"`` (symmetric InfoNCE) or ``"siglip"`` (sigmoid loss).

    Returns:
        A new loss module.

    Raises:
        ValueError: If the name is unknown.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown contrastive loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]()
