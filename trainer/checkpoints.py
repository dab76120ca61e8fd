"""Where a model's weights come from and go: initial checkpoints, training checkpoints, exports.

- :func:`build_model`: from scratch, an OpenCLIP file or a Hugging Face ``CLIPModel`` folder.
  A checkpoint's sizes are read from its tensors (OpenCLIP files carry no config; heads are
  width / 64, OpenCLIP's rule). Its patch embedding is inflated to the bands when it is RGB
  (kept when it already has the bands, as Llama3-MS-CLIP's own file); its positional
  embeddings are interpolated when ``image_size`` or ``context_length`` differ.
- :class:`TrainState` files (``checkpoints/step-NNNNNNN.pt``): model, optimiser, scheduler,
  step, epoch, the loader's state, every RNG and the caption-fit counts: what an exact resume
  needs. Written to a temporary name and renamed, so a kill never leaves a torn file.
- Model folders (:func:`save_model_folder`, :func:`load_model_folder`): a Hugging Face
  ``CLIPModel`` folder (``config.json``, ``model.safetensors``: loads in
  ``CLIPModel.from_pretrained``) plus ``eocap_model.json`` (bands, normalisation, preprocessing,
  text settings), the tokenizer, and an OpenCLIP state dict with its ``open_clip_config.json``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPModel
from transformers.utils import logging as transformers_logging

from pipeline.dataset.loader import CENTI_DB_NODATA, CENTI_DB_PER_DB
from trainer.config import ModelConfig
from trainer.convert import from_openclip, to_openclip, unwrap_openclip_checkpoint
from trainer.modal import (
    SAR_DB_STATS,
    ChannelLayout,
    ModalCLIP,
    model_from_description,
)
from trainer.model import ARCHS, ArchSpec, MultispectralCLIP, inflate_patch_embedding
from trainer.text import TextTokenizer

__all__ = [
    "MODAL_WEIGHTS",
    "MODEL_FILE",
    "OPENCLIP_CONFIG",
    "OPENCLIP_WEIGHTS",
    "SAR_STATS_KEY",
    "CheckpointError",
    "LoadedModel",
    "Preprocessing",
    "build_model",
    "capture_rng",
    "export_checkpoint",
    "latest_checkpoint",
    "load_model_folder",
    "restore_rng",
    "save_model_folder",
    "save_train_state",
]

MODEL_FILE = "eocap_model.json"
"""What eocap needs beside the weights: bands, normalisation, preprocessing, text settings."""
OPENCLIP_WEIGHTS = "open_clip_model.safetensors"
"""The same weights under OpenCLIP's names (``open_clip.load_checkpoint`` reads safetensors)."""
OPENCLIP_CONFIG = "open_clip_config.json"
"""OpenCLIP's model and preprocessing config (the layout of ``hf-hub:`` OpenCLIP repos)."""
MODAL_WEIGHTS = "eocap_modal_model.safetensors"
"""A modality-aware model's weights (its own state dict; no Hugging Face or OpenCLIP form)."""
MODAL_FORMAT_NOTE = (
    "modality-aware model (trainer.modal.ModalCLIP): weights in "
    f"{MODAL_WEIGHTS}, loaded by trainer.checkpoints.load_model_folder; no Hugging Face "
    "CLIPModel or OpenCLIP export, which have one patch embedding and no modality tokens"
)
"""What a modality-aware model folder holds, written into its ``eocap_model.json``."""
SAR_STATS_KEY = "sar_db"
"""The band statistics' key of per-polarisation backscatter mean/std, in dB."""
_CHECKPOINT_GLOB = "step-*.pt"

# Saving and loading model folders would draw tqdm bars inside the trainer's rich progress.
transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


class CheckpointError(Exception):
    """A checkpoint or model folder that cannot be read or does not fit the config."""


@dataclass(frozen=True)
class Preprocessing:
    """How raw DN become model inputs: the model's contract with every dataset it reads.

    Attributes:
        bands: ESA names of the input channels, in order.
        mean: Per-band mean of raw DN (eocap's convention: reflectance x 10000, no offset).
        std: Per-band standard deviation of raw DN.
        image_size: The side chips are resized to (bicubic), after an optional crop.
        crop: Native pixels cropped from the chip centre first; None: whole chips.
        modalities: The model's modalities (:data:`trainer.modal.MODALITIES`); ``("s2",)``:
            the plain :class:`MultispectralCLIP`, anything else a :class:`ModalCLIP`.
        polarisations: Sentinel-1 channels (with ``s1``), in order.
        sar_mean: Per-polarisation mean backscatter, dB.
        sar_std: Per-polarisation standard deviation, dB.
    """

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    crop: int | None
    modalities: tuple[str, ...] = ("s2",)
    polarisations: tuple[str, ...] = ()
    sar_mean: tuple[float, ...] = ()
    sar_std: tuple[float, ...] = ()

    @property
    def modal(self) -> bool:
        """Whether the model is modality-aware (:class:`ModalCLIP`)."""
        return self.modalities != ("s2",)

    @property
    def layout(self) -> ChannelLayout:
        """The model's input channels by modality."""
        return ChannelLayout.of(self.modalities, self.bands, self.polarisations)

    def band_stats(self) -> dict[str, Any]:
        """The normalisation in band_stats.json's layout (what the loader takes)."""
        return {
            "bands": {
                b: {"mean": m, "std": s}
                for b, m, s in zip(self.bands, self.mean, self.std, strict=True)
            }
        }

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> Preprocessing:
        """The preprocessing as ``dataclasses.asdict`` (or eocap_model.json) saved it."""
        return cls(
            tuple(saved["bands"]),
            tuple(float(m) for m in saved["mean"]),
            tuple(float(s) for s in saved["std"]),
            int(saved["image_size"]),
            None if saved["crop"] is None else int(saved["crop"]),
            tuple(saved.get("modalities", ("s2",))),
            tuple(saved.get("polarisations", ())),
            tuple(float(m) for m in saved.get("sar_mean", ())),
            tuple(float(s) for s in saved.get("sar_std", ())),
        )

    @classmethod
    def from_band_stats(
        cls,
        stats: Mapping[str, Any],
        bands: Sequence[str],
        *,
        image_size: int,
        crop: int | None,
        modalities: Sequence[str] = ("s2",),
        polarisations: Sequence[str] = (),
    ) -> Preprocessing:
        """The normalisation of ``bands`` read from band_stats.json's layout.

        Sentinel-1 ``polarisations`` (with modality ``s1``) are normalised in dB by their
        entry under :data:`SAR_STATS_KEY` (``{"sar_db": {"VV": {"mean": dB, "std": dB}}}``)
        where the file has one, else by :data:`trainer.modal.SAR_DB_STATS`.
        Without ``s2`` there are no bands.

        Raises:
            CheckpointError: for a band without a mean and a positive std, or a polarisation
                without either.
        """
        per_band = stats.get("bands", {})
        bands = tuple(bands) if "s2" in modalities else ()
        polarisations = tuple(polarisations) if "s1" in modalities else ()
        mean, std = [], []
        for band in bands:
            entry = per_band.get(band) or {}
            if entry.get("mean") is None or not entry.get("std"):
                raise CheckpointError(
                    f"band statistics have no mean/std for {band}: give data.band_stats with "
                    "every input band"
                )
            mean.append(float(entry["mean"]))
            std.append(float(entry["std"]))
        sar_mean, sar_std = [], []
        per_polarisation = stats.get(SAR_STATS_KEY, {})
        for name in polarisations:
            entry = per_polarisation.get(name) or {}
            if entry.get("mean") is not None and entry.get("std"):
                pair = (float(entry["mean"]), float(entry["std"]))
            elif name in SAR_DB_STATS:
                pair = SAR_DB_STATS[name]
            else:
                raise CheckpointError(
                    f"no dB mean/std for polarisation {name}: add it to data.band_stats under "
                    f"{SAR_STATS_KEY!r}"
                )
            sar_mean.append(pair[0])
            sar_std.append(pair[1])
        return cls(
            bands,
            tuple(mean),
            tuple(std),
            image_size,
            crop,
            tuple(modalities),
            polarisations,
            tuple(sar_mean),
            tuple(sar_std),
        )


@dataclass
class LoadedModel:
    """A model with its tokenizer and preprocessing."""

    model: MultispectralCLIP
    tokenizer: TextTokenizer
    preprocessing: Preprocessing
    context_length: int


def _resize_positions_2d(weight: torch.Tensor, grid: int) -> torch.Tensor:
    """Vision positions [1 + g*g, w] resized (bicubic) to a ``grid`` x ``grid`` patch grid."""
    old = math.isqrt(weight.shape[0] - 1)
    if old == grid:
        return weight
    cls_pos, patches = weight[:1], weight[1:]
    square = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    square = F.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, square.permute(0, 2, 3, 1).reshape(grid * grid, -1)])


def _resize_positions_1d(weight: torch.Tensor, length: int) -> torch.Tensor:
    """Text positions [n, w] resized (linear) to ``length`` positions."""
    if weight.shape[0] == length:
        return weight
    line = weight.t().unsqueeze(0)
    return F.interpolate(line, size=length, mode="linear", align_corners=True)[0].t().contiguous()


def _arch_from_state(state: Mapping[str, torch.Tensor], *, quick_gelu: bool) -> ArchSpec:
    """The sizes of a :class:`MultispectralCLIP` state dict (heads: width / 64)."""

    def layers(prefix: str) -> int:
        found = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
        return len(found)

    patch = state["clip.vision_model.embeddings.patch_embedding.weight"]
    vision_pos = state["clip.vision_model.embeddings.position_embedding.weight"]
    tokens = state["clip.text_model.embeddings.token_embedding.weight"]
    text_pos = state["clip.text_model.embeddings.position_embedding.weight"]
    grid = math.isqrt(vision_pos.shape[0] - 1)
    vision_width, text_width = patch.shape[0], tokens.shape[1]
    return ArchSpec(
        image_size=grid * patch.shape[-1],
        patch_size=patch.shape[-1],
        vision_width=vision_width,
        vision_layers=layers("clip.vision_model.encoder.layers."),
        vision_heads=max(vision_width // 64, 1),
        text_width=text_width,
        text_layers=layers("clip.text_model.encoder.layers."),
        text_heads=max(text_width // 64, 1),
        context_length=text_pos.shape[0],
        vocab_size=tokens.shape[0],
        embed_dim=state["clip.text_projection.weight"].shape[0],
        activation="quick_gelu" if quick_gelu else "gelu",
    )


def _read_checkpoint(config: ModelConfig) -> tuple[dict[str, torch.Tensor], ArchSpec]:
    """The initial checkpoint's state (in :class:`MultispectralCLIP` names) and its sizes."""
    path = Path(str(config.checkpoint))
    if not path.exists():
        raise CheckpointError(f"model.checkpoint {path} does not exist: give a local path")
    if (path / MODAL_WEIGHTS).is_file():
        raise CheckpointError(
            f"{path} is a modality-aware eocap model folder: it has no Hugging Face or "
            "OpenCLIP form to start from (load it with trainer.checkpoints.load_model_folder)"
        )
    try:
        if config.init == "hf":
            clip = CLIPModel.from_pretrained(str(path), local_files_only=True)
            state = {f"clip.{k}": v for k, v in clip.state_dict().items()}
            act = str(getattr(clip.config.vision_config, "hidden_act", "gelu"))
            return state, _arch_from_state(state, quick_gelu=act == "quick_gelu")
        if path.suffix == ".safetensors":
            loaded: Mapping[str, Any] = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        state = from_openclip(unwrap_openclip_checkpoint(loaded))
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read {config.init} checkpoint {path}: {first_line}"
        ) from None
    return state, _arch_from_state(state, quick_gelu=config.quick_gelu)


def build_model(
    config: ModelConfig,
    bands: Sequence[str],
    tokenizer: TextTokenizer,
    *,
    init_logit_scale: float,
    init_logit_bias: float | None,
    seed: int,
    polarisations: Sequence[str] = (),
) -> MultispectralCLIP:
    """The model to train: fresh (seeded) weights, or a checkpoint's adapted to the bands.

    With ``model.modalities`` other than ``[s2]`` it is a :class:`ModalCLIP` over ``bands``
    (S2) and ``polarisations`` (S1); a checkpoint's patch embedding becomes its S2 one, and
    what a CLIP checkpoint has no weights for (the S1 patch embedding, the modality and
    channel embeddings) starts fresh.

    Raises:
        CheckpointError: for an unreadable checkpoint, or one whose vocabulary or input
            channels do not fit.
    """
    torch.manual_seed(seed)
    state: dict[str, torch.Tensor] | None = None
    if config.init == "scratch":
        arch = ARCHS[config.arch].with_updates(
            vocab_size=tokenizer.vocab_size,
            image_size=config.image_size or ARCHS[config.arch].image_size,
            activation="quick_gelu" if config.quick_gelu else "gelu",
        )
    else:
        state, arch = _read_checkpoint(config)
        if arch.vocab_size != tokenizer.vocab_size:
            raise CheckpointError(
                f"checkpoint vocabulary {arch.vocab_size} != tokenizer {tokenizer.vocab_size}: "
                "use model.tokenizer: clip with CLIP checkpoints"
            )
        arch = arch.with_updates(image_size=config.image_size or arch.image_size)
    arch = arch.with_updates(context_length=config.context_length)
    model: MultispectralCLIP
    if config.modalities == ["s2"]:
        model = MultispectralCLIP(
            arch,
            bands,
            eos_id=tokenizer.end_id,
            pad_id=tokenizer.pad_id,
            init_logit_scale=init_logit_scale,
            init_logit_bias=init_logit_bias,
        )
    else:
        model = ModalCLIP(
            arch,
            ChannelLayout.of(config.modalities, bands, polarisations),
            eos_id=tokenizer.end_id,
            pad_id=tokenizer.pad_id,
            init_logit_scale=init_logit_scale,
            init_logit_bias=init_logit_bias,
        )
    if state is None:
        return model
    patch_key = "clip.vision_model.embeddings.patch_embedding.weight"
    fresh: set[str] = set()
    if model.bands:
        channels = state[patch_key].shape[1]
        if channels == 3 and len(bands) != 3:
            state[patch_key] = inflate_patch_embedding(state[patch_key], bands, config.inflation)
        elif channels != len(bands):
            raise CheckpointError(
                f"checkpoint has {channels} input channels, the config {len(bands)} bands: "
                "give an RGB checkpoint or the checkpoint's own bands"
            )
    if isinstance(model, ModalCLIP):
        patch = state.pop(patch_key)
        if model.bands:
            state["patch_embeddings.s2.weight"] = patch
        fresh = set(model.state_dict()) - set(state)
    vision_key = "clip.vision_model.embeddings.position_embedding.weight"
    state[vision_key] = _resize_positions_2d(state[vision_key], arch.image_size // arch.patch_size)
    text_key = "clip.text_model.embeddings.position_embedding.weight"
    state[text_key] = _resize_positions_1d(state[text_key], arch.context_length)
    # A CLIP checkpoint has no SigLIP bias (kept at its init), a SigLIP one has one (unused).
    if init_logit_bias is not None:
        state.setdefault("logit_bias", model.state_dict()["logit_bias"])
    else:
        state.pop("logit_bias", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if key not in fresh]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {config.checkpoint} does not fit: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    return model


# -- training state ------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Every random generator the training loop touches."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put back what :func:`capture_rng` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(folder: Path, step: int, state: Mapping[str, Any], *, keep: int) -> Path:
    """Write ``step-NNNNNNN.pt`` atomically into ``folder``; keep the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.pt"
    partial = path.with_name(f".{path.name}.partial")
    torch.save(dict(state), partial)
    os.replace(partial, path)
    for old in sorted(folder.glob(_CHECKPOINT_GLOB))[:-keep]:
        old.unlink()
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest ``step-*.pt`` in ``folder``, or None."""
    found = sorted(folder.glob(_CHECKPOINT_GLOB)) if folder.is_dir() else []
    return found[-1] if found else None


# -- model folders ---------------------------------------------------------------------------


def _openclip_config(model: MultispectralCLIP, prep: Preprocessing) -> dict[str, Any]:
    arch = model.arch
    return {
        "model_cfg": {
            "embed_dim": arch.embed_dim,
            "quick_gelu": arch.activation == "quick_gelu",
            "vision_cfg": {
                "image_size": arch.image_size,
                "layers": arch.vision_layers,
                "width": arch.vision_width,
                "patch_size": arch.patch_size,
                "head_width": arch.vision_width // arch.vision_heads,
            },
            "text_cfg": {
                "context_length": arch.context_length,
                "vocab_size": arch.vocab_size,
                "width": arch.text_width,
                "heads": arch.text_heads,
                "layers": arch.text_layers,
                # The text embedding is read at the end token (not at the highest id).
                "pool_type": "eos",
                "eos_id": model.eos_id,
            },
        },
        "preprocess_cfg": {
            "mean": list(prep.mean),
            "std": list(prep.std),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
        "eocap": {
            "in_chans": len(model.bands),
            "bands": list(model.bands),
            "note": "OpenCLIP's VisionTransformer builds a 3-channel conv1: replace "
            "visual.conv1 with Conv2d(in_chans, width, patch, patch, bias=False) before "
            "load_state_dict (docs/training.md)",
        },
    }


def save_model_folder(
    folder: Path,
    model: MultispectralCLIP,
    tokenizer: TextTokenizer,
    prep: Preprocessing,
    *,
    context_length: int,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write the model as a Hugging Face folder plus OpenCLIP weights and eocap's settings.

    A :class:`ModalCLIP` has no Hugging Face or OpenCLIP form (both hold one patch embedding
    and no modality or channel embeddings): its folder holds :data:`MODAL_WEIGHTS` (its own
    state dict) beside ``eocap_model.json``, which records the modalities, bands,
    polarisations and their normalisation, and says so under ``formats``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    modal: dict[str, Any] = {}
    if isinstance(model, ModalCLIP):
        save_file(state, str(folder / MODAL_WEIGHTS))
        modal = {
            "modalities": list(prep.modalities),
            "polarisations": list(prep.polarisations),
            "sar_mean": list(prep.sar_mean),
            "sar_std": list(prep.sar_std),
            "sar_convention": f"dB = raw / {CENTI_DB_PER_DB}, raw {CENTI_DB_NODATA} = nodata",
        }
    else:
        model.clip.save_pretrained(str(folder), safe_serialization=True)
        save_file(to_openclip(state), str(folder / OPENCLIP_WEIGHTS))
        (folder / OPENCLIP_CONFIG).write_text(json.dumps(_openclip_config(model, prep), indent=2))
    settings = {
        "format": 1,
        "model": model.describe(),
        "preprocessing": {
            "bands": list(prep.bands),
            "mean": list(prep.mean),
            "std": list(prep.std),
            "image_size": prep.image_size,
            "crop": prep.crop,
            "resize": "bicubic",
            "pixel_convention": "DN = reflectance x 10000, no BOA offset (eocap harmonised)",
            **modal,
        },
        "context_length": context_length,
        "logit_bias": None if model.logit_bias is None else model.logit_bias.item(),
        **({"formats": MODAL_FORMAT_NOTE} if modal else {}),
        **(extra or {}),
    }
    (folder / MODEL_FILE).write_text(json.dumps(settings, indent=2) + "\n")


def export_checkpoint(checkpoint: Path, folder: Path) -> None:
    """Write the model folder of a training checkpoint (``checkpoints/step-NNNNNNN.pt``).

    The run's tokenizer is read from ``text/`` beside ``checkpoints/``.

    Raises:
        CheckpointError: for a file that is not an eocap training checkpoint.
    """
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model = model_from_description(saved["model_description"])
        model.load_state_dict(saved["model"])
        prep = Preprocessing.from_dict(saved["preprocessing"])
        tokenizer = TextTokenizer.load(checkpoint.parent.parent / "text")
    except (OSError, KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"{checkpoint} is not an eocap training checkpoint with its run folder: {exc}"
        ) from None
    save_model_folder(
        folder,
        model,
        tokenizer,
        prep,
        context_length=int(saved["context_length"]),
        extra={"steps": int(saved["step"]), "exported_from": checkpoint.name},
    )


def load_model_folder(folder: Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """A model folder written by :func:`save_model_folder`.

    Raises:
        CheckpointError: when ``folder`` is not one.
    """
    settings_path = folder / MODEL_FILE
    if not settings_path.is_file():
        raise CheckpointError(
            f"{folder} is not an eocap model folder (no {MODEL_FILE}): pass a run's model/ "
            "folder or an `eocap train` output dir"
        )
    settings = json.loads(settings_path.read_text())
    model = model_from_description(settings["model"])
    if isinstance(model, ModalCLIP):
        model.load_state_dict(load_file(str(folder / MODAL_WEIGHTS)))
    else:
        clip = CLIPModel.from_pretrained(str(folder), local_files_only=True)
        model.clip.load_state_dict(clip.state_dict())
    if model.logit_bias is not None and settings.get("logit_bias") is not None:
        with torch.no_grad():
            model.logit_bias.fill_(float(settings["logit_bias"]))
    return LoadedModel(
        model.to(device).eval(),
        TextTokenizer.load(folder),
        Preprocessing.from_dict(settings["preprocessing"]),
        int(settings["context_length"]),
    )
