"""The trainer's input path: raw DN from the loader, normalised and resized on the device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.dataset.loader import SampleDataset
from trainer.checkpoints import Preprocessing
from trainer.data import collate_pairs, to_model_input


def test_uint16_chips_normalise_as_the_loaders_float_path(small_release: Path):
    bands = ("B04", "B08")
    prep = Preprocessing(
        bands=bands, mean=(900.0, 2500.0), std=(400.0, 800.0), image_size=64, crop=None
    )
    raw = SampleDataset(small_release, bands=bands, raw=True, shuffle=False)
    normalised = SampleDataset(
        small_release, bands=bands, band_stats=prep.band_stats(), shuffle=False
    )
    raw_batch = collate_pairs([s for s, _ in zip(raw, range(4), strict=False)])
    float_batch = collate_pairs([s for s, _ in zip(normalised, range(4), strict=False)])
    assert raw_batch["pixels"].dtype == torch.uint16
    assert raw_batch["sample_id"] == float_batch["sample_id"]
    expected = F.interpolate(
        float_batch["pixels"], size=(64, 64), mode="bicubic", align_corners=False, antialias=True
    )
    torch.testing.assert_close(to_model_input(raw_batch["pixels"], prep), expected)


def test_values_above_int16_stay_positive():
    prep = Preprocessing(bands=("B02",), mean=(0.0,), std=(1.0,), image_size=2, crop=None)
    chips = torch.tensor([[[[65535, 40000], [1, 0]]]], dtype=torch.uint16)
    assert to_model_input(chips, prep).flatten().tolist() == [65535.0, 40000.0, 1.0, 0.0]


def test_a_band_count_mismatch_is_one_plain_error():
    prep = Preprocessing(
        bands=("B02", "B03"), mean=(0.0, 0.0), std=(1.0, 1.0), image_size=2, crop=None
    )
    with pytest.raises(ValueError, match="chips have 1 bands, the model takes 2"):
        to_model_input(torch.zeros((1, 1, 2, 2)), prep)
