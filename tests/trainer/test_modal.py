"""The modality-aware tower: masking, dropout, mixed batches, inputs, checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor

from pipeline.dataset.loader import CENTI_DB_NODATA, COHERENCE_NODATA
from trainer.checkpoints import (
    MODAL_WEIGHTS,
    MODEL_FILE,
    CheckpointError,
    Preprocessing,
    build_model,
    load_model_folder,
    save_model_folder,
)
from trainer.config import ModelConfig, TrainConfig
from trainer.data import batch_model_input, modal_input, to_model_input
from trainer.loss import contrastive_loss
from trainer.modal import (
    SAR_DB_STATS,
    ChannelLayout,
    ModalCLIP,
    channels_present,
    input_dropout,
)
from trainer.model import ARCHS
from trainer.text import TextTokenizer
from trainer.train import optimisation_step

S2 = ("B02", "B03", "B04", "B08")
S1 = ("VV", "VH")
LAYOUT = ChannelLayout.of(["s2", "s1"], S2, S1)
ARCH = ARCHS["tiny"].with_updates(
    image_size=16,
    patch_size=8,
    vision_width=64,
    vision_layers=2,
    vision_heads=1,
    text_width=64,
    text_layers=1,
    text_heads=1,
    context_length=8,
    vocab_size=300,
    embed_dim=32,
)
EOS = 1


def _model(layout: ChannelLayout = LAYOUT, seed: int = 0, attn: str = "sdpa") -> ModalCLIP:
    torch.manual_seed(seed)
    return ModalCLIP(ARCH, layout, eos_id=EOS, attn_implementation=attn)


def _mixed(batch: int = 6, seed: int = 0) -> torch.Tensor:
    """Normalised inputs: rows cycle through both modalities, S2 only, S1 only."""
    pixels = torch.randn(
        batch, len(LAYOUT.channels), 16, 16, generator=torch.Generator().manual_seed(seed)
    )
    pixels[1::3, 4:] = math.nan
    pixels[2::3, :4] = math.nan
    return pixels


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_an_absent_modality_s_pixels_do_not_reach_the_embedding(attn: str):
    model = _model(attn=attn).eval()
    pixels = torch.randn(4, 6, 16, 16)
    present = torch.ones(4, 6, dtype=torch.bool)
    present[:, 4:] = False  # S1 absent: its values below are arbitrary, not NaN
    other = pixels.clone()
    other[:, 4:] = torch.randn(4, 2, 16, 16) * 100
    with torch.no_grad():
        first = model.encode_image(pixels, present=present)
        second = model.encode_image(other, present=present)
        both = model.encode_image(other)
    assert torch.equal(first, second)
    assert not torch.allclose(first, both, atol=1e-3)  # present, S1 does change it


def test_s2_only_equals_a_model_without_s1_tokens():
    """The S1 tokens (positions + modality embedding, never zero) are masked out entirely."""
    model = _model().eval()
    s2_only = _model(ChannelLayout.of(["s2"], S2, ()), seed=1).eval()
    state = model.state_dict()
    state["modality_embeddings"] = state["modality_embeddings"][:1]  # S2's
    missing, unexpected = s2_only.load_state_dict(state, strict=False)
    assert not missing
    assert set(unexpected) == {"patch_embeddings.s1.weight", "channel_embeddings.s1"}
    pixels = _mixed()[:1]
    pixels[:, 4:] = math.nan
    with torch.no_grad():
        assert torch.allclose(
            model.encode_image(pixels), s2_only.encode_image(pixels[:, :4]), atol=1e-6
        )


def test_a_dropped_channel_is_zeroed_and_the_rest_rescaled():
    """Dropping B02 of four bands = B02 at 0 and the others x 4/3, but for channel embeddings."""
    model = _model().eval()
    pixels = _mixed()[:2]
    pixels[:, 4:] = math.nan
    dropped = pixels.clone()
    dropped[:, 0] = math.nan
    rescaled = pixels.clone()
    rescaled[:, 0] = 0
    rescaled[:, 1:4] *= 4 / 3
    with torch.no_grad():
        assert not torch.allclose(model.encode_image(dropped), model.encode_image(rescaled))
        model.channel_embeddings["s2"].zero_()
        assert torch.allclose(model.encode_image(dropped), model.encode_image(rescaled), atol=1e-6)


def test_input_dropout_keeps_shapes_and_never_drops_a_last_modality_or_channel():
    generator = torch.Generator().manual_seed(0)
    pixels = _mixed(batch=300)
    before = channels_present(pixels)
    out = input_dropout(pixels, LAYOUT, modality_p=0.9, channel_p=0.9, generator=generator)
    assert out.shape == pixels.shape
    after = channels_present(out)
    assert not (after & ~before).any()  # nothing comes back
    kept = ~torch.isnan(out)
    assert torch.equal(out[kept], pixels[kept])  # kept channels untouched
    s2, s1 = after[:, :4].any(dim=1), after[:, 4:].any(dim=1)
    assert (s2 | s1).all()
    had_both = before[:, :4].any(dim=1) & before[:, 4:].any(dim=1)
    assert (had_both & (s2 ^ s1)).sum() > 0.8 * had_both.sum()  # most lost one modality
    # single-modality samples keep theirs, with at least one channel
    assert s2[~before[:, 4:].any(dim=1)].all() and s1[~before[:, :4].any(dim=1)].all()
    assert after[:, :4].sum(dim=1)[s2].min() >= 1
    channels_only = input_dropout(
        pixels, LAYOUT, modality_p=0.0, channel_p=0.99, generator=generator
    )
    left = channels_present(channels_only)
    assert torch.equal(left[:, :4].any(dim=1), before[:, :4].any(dim=1))
    assert torch.equal(left[:, 4:].any(dim=1), before[:, 4:].any(dim=1))
    assert left.sum() < 0.5 * before.sum()


def _losses_fall(
    model: ModalCLIP, generator: torch.Generator, batch: Callable[[], tuple[Tensor, Tensor]]
) -> None:
    """40 CPU steps on ``batch()`` (pixels, classes): the loss must fall by over 0.5."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loss_fn = contrastive_loss("clip")
    losses = []
    for _ in range(40):
        pixels, classes = batch()
        ids = torch.zeros(len(classes), ARCH.context_length, dtype=torch.long)
        ids[:, 0] = classes + 2
        ids[:, 1] = EOS
        loss = optimisation_step(
            model,
            model,
            optimizer,
            loss_fn,
            pixels,
            ids,
            autocast=torch.autocast("cpu", enabled=False),
            grad_clip=1.0,
        )
        losses.append(float(loss))
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses


def test_a_mixed_batch_trains_on_cpu_and_the_loss_falls():
    """S2-only, S1-only and both in every batch, with dropout: the classes are learnt."""
    generator = torch.Generator().manual_seed(3)
    s2_pattern = torch.randn(4, 4, generator=generator)
    s1_pattern = torch.randn(4, 2, generator=generator)

    def batch() -> tuple[Tensor, Tensor]:
        classes = torch.randperm(4, generator=generator).repeat(2)
        pixels = torch.cat([s2_pattern[classes], s1_pattern[classes]], dim=1)[..., None, None]
        pixels = pixels + 0.3 * torch.randn(8, 6, 16, 16, generator=generator)
        pixels[1::3, 4:] = math.nan
        pixels[2::3, :4] = math.nan
        pixels = input_dropout(pixels, LAYOUT, modality_p=0.3, channel_p=0.2, generator=generator)
        return pixels, classes

    _losses_fall(_model(), generator, batch)


def _prep() -> Preprocessing:
    return Preprocessing.from_band_stats(
        {"bands": {b: {"mean": 1000.0, "std": 500.0} for b in S2}},
        S2,
        image_size=16,
        crop=None,
        modalities=("s2", "s1"),
        polarisations=S1,
    )


def test_modal_input_converts_hundredths_of_db_and_marks_missing_sar_absent():
    prep = _prep()
    assert prep.sar_mean == (SAR_DB_STATS["VV"][0], SAR_DB_STATS["VH"][0])
    pixels = torch.full((3, 4, 16, 16), 1500, dtype=torch.uint16)
    vv_mean, vv_std = SAR_DB_STATS["VV"]
    sar = torch.empty(3, 2, 16, 16, dtype=torch.int16)
    sar[:, 0] = round(100 * (vv_mean + vv_std))  # one std above the mean: 1 after normalising
    sar[:, 1] = CENTI_DB_NODATA  # VH without data in every sample: absent
    sar[0, 0, 0, 0] = CENTI_DB_NODATA  # a nodata pixel of a present channel: 0
    sar_ok = torch.tensor([True, True, False])
    out = modal_input(prep, pixels=pixels, sar_db=sar, sar_ok=sar_ok)
    assert out.shape == (3, 6, 16, 16)
    assert torch.allclose(out[:, :4], torch.full((3, 4, 16, 16), 1.0))  # (1500 - 1000) / 500
    assert out[0, 4, 0, 0] == 0 and out[0, 4, 5, 5] == pytest.approx(1.0, abs=1e-3)
    assert channels_present(out).tolist() == [[True] * 5 + [False]] * 2 + [[True] * 4 + [False] * 2]
    s2_only = to_model_input(pixels, prep)  # evaluation's path: S2 chips, no SAR
    assert torch.equal(s2_only[:, :4], out[:, :4]) and torch.isnan(s2_only[:, 4:]).all()
    keep = prep.layout.selection(["s1"])
    assert (
        channels_present(modal_input(prep, pixels=pixels, sar_db=sar, keep=keep)).tolist()
        == [[False] * 4 + [True, False]] * 3
    )


def test_selection_names_what_the_model_lacks():
    assert LAYOUT.selection(drop=["B03", "VH"]).tolist() == [True, False, True, True, True, False]
    with pytest.raises(ValueError, match="not s3"):
        LAYOUT.selection(["s3"])
    with pytest.raises(ValueError, match="cannot drop B05"):
        LAYOUT.selection(drop=["B05"])
    with pytest.raises(ValueError, match="leaves no channel"):
        LAYOUT.selection(["s1"], drop=["VV", "VH"])


def _tokenizer() -> TextTokenizer:
    return TextTokenizer.train(
        ["a forest beside a lake.", "cropland and a town."] * 20, vocab_size=300
    )


def test_a_model_folder_round_trip_gives_identical_embeddings(tmp_path: Path):
    tokenizer = _tokenizer()
    config = ModelConfig(image_size=16, modalities=["s2", "s1"], vocab_size=300)
    model = build_model(
        config, S2, tokenizer, init_logit_scale=2.0, init_logit_bias=None, seed=0, polarisations=S1
    )
    assert isinstance(model, ModalCLIP) and model.layout == LAYOUT
    prep = _prep()
    save_model_folder(tmp_path / "model", model, tokenizer, prep, context_length=77)
    files = {p.name for p in (tmp_path / "model").iterdir()}
    assert MODAL_WEIGHTS in files and "config.json" not in files  # no CLIPModel form
    loaded = load_model_folder(tmp_path / "model")
    assert loaded.preprocessing == prep
    pixels = _mixed()
    with torch.no_grad():
        assert torch.equal(model.eval().encode_image(pixels), loaded.model.encode_image(pixels))
    start_from = ModelConfig(init="hf", checkpoint=str(tmp_path / "model"), tokenizer="clip")
    with pytest.raises(CheckpointError, match="modality-aware eocap model folder"):
        build_model(
            start_from, S2, TextTokenizer.clip(), init_logit_scale=0, init_logit_bias=None, seed=0
        )
    assert "no Hugging Face" in (tmp_path / "model" / MODEL_FILE).read_text()


def test_dropout_settings_need_the_modality_aware_tower():
    with pytest.raises(ValueError, match="channel_dropout needs the modality-aware tower"):
        TrainConfig.model_validate({"train": {"channel_dropout": 0.2}})
    with pytest.raises(ValueError, match="modality_dropout needs two"):
        TrainConfig.model_validate(
            {"model": {"modalities": ["s1"]}, "train": {"modality_dropout": 0.5}}
        )
    both = TrainConfig.model_validate(
        {
            "model": {"modalities": ["s2", "s1"]},
            "train": {"modality_dropout": 0.5, "channel_dropout": 0.2},
        }
    )
    assert both.model.modalities == ["s2", "s1"]


COH_LAYOUT = ChannelLayout.of(["s2", "s1", "coh"], S2, S1)


def test_a_model_of_s2_s1_and_coherence_learns_from_each_alone():
    """Rows cycle S2 only, S1 only, coherence only: each alone must tell the classes apart."""
    assert COH_LAYOUT.channels == (*S2, *S1, "COH")
    model = _model(COH_LAYOUT)
    generator = torch.Generator().manual_seed(5)
    patterns = torch.randn(4, 7, generator=generator)

    def batch() -> tuple[Tensor, Tensor]:
        classes = torch.randperm(4, generator=generator).repeat(3)
        pixels = patterns[classes][..., None, None] + 0.3 * torch.randn(
            12, 7, 16, 16, generator=generator
        )
        pixels[0::3, 4:] = math.nan  # S2 only
        pixels[1::3, :4] = math.nan  # S1 only
        pixels[1::3, 6:] = math.nan
        pixels[2::3, :6] = math.nan  # coherence only
        return input_dropout(pixels, COH_LAYOUT, modality_p=0.2, channel_p=0.0), classes

    _losses_fall(model, generator, batch)
    coherence_only = torch.full((1, 7, 16, 16), math.nan)
    coherence_only[:, 6] = 1.0
    with torch.no_grad():
        assert torch.isfinite(model.eval().encode_image(coherence_only)).all()


def test_modal_input_reads_coherence_in_hundredths_and_marks_missing_coherence_absent():
    prep = Preprocessing.from_band_stats(
        {"bands": {b: {"mean": 1000.0, "std": 500.0} for b in S2}},
        S2,
        image_size=16,
        crop=None,
        modalities=("s2", "s1", "coh"),
        polarisations=S1,
    )
    assert prep.layout == COH_LAYOUT
    pixels = torch.full((3, 4, 16, 16), 1500, dtype=torch.uint16)
    coherence = torch.full((3, 1, 16, 16), 75, dtype=torch.uint8)  # (0.75 - 0.5) / 0.25 = 1
    coherence[0, 0, 0, 0] = COHERENCE_NODATA  # a nodata pixel of a present channel: 0
    coherence[2] = COHERENCE_NODATA  # no data at all: absent
    coh_ok = torch.tensor([True, False, True])  # the second's state says none
    out = modal_input(prep, pixels=pixels, coherence=coherence, coh_ok=coh_ok)
    assert out.shape == (3, 7, 16, 16)
    assert out[0, 6, 0, 0] == 0 and out[0, 6, 5, 5] == pytest.approx(1.0)
    present = [[True] * 4 + [False, False, has] for has in (True, False, False)]
    assert channels_present(out).tolist() == present  # no S1 in the batch: absent
    batch = {"pixels": pixels, "coherence": coherence, "coh_ok": coh_ok}
    torch.testing.assert_close(
        batch_model_input(batch, prep, torch.device("cpu")), out, equal_nan=True
    )
