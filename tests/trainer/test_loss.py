"""The contrastive losses: hand-computed values, and DDP over two CPU processes equal to one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from trainer.loss import (
    LOSSES,
    MAX_LOGIT_SCALE,
    ClipLoss,
    SigLipLoss,
    clamp_logit_scale_,
    contrastive_loss,
)
from trainer.train import leave_process_group

# Two pairs: images e1, e2; texts e1 and (0.6, 0.8), so the similarities are
# [[1, 0.6], [0, 0.8]] (rows: images, columns: texts).
IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TEXTS = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_clip_loss_by_hand():
    # Cross-entropy of a 2-way softmax with logits (a, b), target a: softplus(b - a).
    image_to_text = (softplus(0.6 - 1.0) + softplus(0.0 - 0.8)) / 2
    text_to_image = (softplus(0.0 - 1.0) + softplus(0.6 - 0.8)) / 2
    loss = ClipLoss()(IMAGES, TEXTS, torch.tensor(1.0))
    assert loss.item() == pytest.approx((image_to_text + text_to_image) / 2)


def test_clip_loss_is_symmetric_in_images_and_texts():
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(6, 4, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(6, 4, generator=generator), dim=-1)
    scale = torch.tensor(5.0)
    assert ClipLoss()(images, texts, scale).item() == pytest.approx(
        ClipLoss()(texts, images, scale).item()
    )


def test_clip_loss_is_near_zero_for_aligned_pairs_and_large_for_mismatched_ones():
    features = torch.eye(4)
    scale = torch.tensor(MAX_LOGIT_SCALE)
    assert ClipLoss()(features, features, scale).item() < 1e-6
    # Every positive pair scores 0 and some negative 100: the loss is about 100.
    assert ClipLoss()(features, features.roll(1, dims=0), scale).item() > 99


def test_siglip_loss_by_hand():
    # Logits 1 * similarity - 1 = [[0, -0.4], [-1, -0.2]]. A positive pair costs
    # -log sigmoid(z) = softplus(-z), a negative one softplus(z); the sum is divided by n = 2.
    expected = (softplus(-0.0) + softplus(0.2) + softplus(-0.4) + softplus(-1.0)) / 2
    loss = SigLipLoss()(IMAGES, TEXTS, torch.tensor(1.0), torch.tensor(-1.0))
    assert loss.item() == pytest.approx(expected)


def test_each_loss_checks_its_bias():
    with pytest.raises(ValueError, match="takes no logit bias"):
        ClipLoss()(IMAGES, TEXTS, torch.tensor(1.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="needs the learnable logit bias"):
        SigLipLoss()(IMAGES, TEXTS, torch.tensor(1.0))


def test_contrastive_loss_builds_the_named_loss_and_rejects_others():
    assert isinstance(contrastive_loss("clip"), ClipLoss)
    assert isinstance(contrastive_loss("siglip"), SigLipLoss)
    with pytest.raises(
        ValueError, match=r"unknown contrastive loss 'infonce'.*\['clip', 'siglip'\]"
    ):
        contrastive_loss("infonce")


def test_clamp_logit_scale_keeps_the_multiplier_between_1_and_100():
    log_scale = torch.nn.Parameter(torch.tensor(math.log(200.0)))
    clamp_logit_scale_(log_scale)
    assert log_scale.exp().item() == pytest.approx(MAX_LOGIT_SCALE)
    log_scale.data.fill_(-1.0)
    clamp_logit_scale_(log_scale)
    assert log_scale.item() == 0.0


def loss_and_grads(
    name: str, image_features: torch.Tensor, text_features: torch.Tensor
) -> dict[str, torch.Tensor]:
    """One loss evaluation and backward, with the model's temperature and bias as leaves."""
    loss_fn = contrastive_loss(name)
    images = image_features.clone().requires_grad_()
    texts = text_features.clone().requires_grad_()
    log_scale = torch.tensor(math.log(3.0), requires_grad=True)
    bias = None if loss_fn.init_logit_bias is None else torch.tensor(-2.0, requires_grad=True)
    loss = loss_fn(images, texts, log_scale.exp(), bias)
    loss.backward()
    results = {
        "loss": loss.detach(),
        "images": images.grad,
        "texts": texts.grad,
        "log_scale": log_scale.grad,
    }
    if bias is not None:
        results["bias"] = bias.grad
    return results


def ddp_worker(
    rank: int,
    world_size: int,
    init_file: str,
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    out_dir: Path,
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    n_local = len(image_features) // world_size
    rows = slice(rank * n_local, (rank + 1) * n_local)
    results = {
        name: loss_and_grads(name, image_features[rows], text_features[rows]) for name in LOSSES
    }
    torch.save(results, out_dir / f"rank{rank}.pt")
    # As the trainer leaves (a bare destroy aborted a rank at exit now and then: SIGABRT,
    # "terminate called without an active exception"); a rank that failed is killed by spawn.
    leave_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Both losses on two gloo processes, each holding half of a global batch of 8."""
    world_size = 2
    generator = torch.Generator().manual_seed(0)
    image_features = F.normalize(torch.randn(8, 6, generator=generator), dim=-1)
    text_features = F.normalize(torch.randn(8, 6, generator=generator), dim=-1)
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(
        ddp_worker,
        args=(world_size, str(out_dir / "init"), image_features, text_features, out_dir),
        nprocs=world_size,
    )
    ranks = [torch.load(out_dir / f"rank{rank}.pt") for rank in range(world_size)]
    return world_size, image_features, text_features, ranks


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ddp_over_two_processes_equals_one_process_on_the_global_batch(name, ddp_results):
    world_size, image_features, text_features, ranks = ddp_results
    single = loss_and_grads(name, image_features, text_features)
    per_rank = [results[name] for results in ranks]
    # DDP averages the rank losses' gradients: the objective is the mean of the rank losses.
    for value in single.keys() - {"images", "texts"}:
        averaged = torch.stack([r[value] for r in per_rank]).mean()
        torch.testing.assert_close(averaged, single[value])
    # A rank's features receive every rank's gradient (the gather's backward sums them), that
    # is world_size times the gradient of the mean objective.
    for features in ("images", "texts"):
        gathered = torch.cat([r[features] for r in per_rank]) / world_size
        torch.testing.assert_close(gathered, single[features])
