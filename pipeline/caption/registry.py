"""Choosing a captioner from its configuration; model captioners are built once per process."""

from __future__ import annotations

import threading
from pathlib import Path

from pipeline.caption.interface import Captioner
from pipeline.caption.template import TemplateCaptioner
from pipeline.core.config import CaptionerConfig
from pipeline.core.errors import PreflightError

IN_PROCESS_BACKENDS = frozenset({"transformers", "vllm", "fast"})
"""Backends that run the model in the captioning process, one generation at a time (shard threads
share the one loaded model and wait for it in turn)."""

_MODEL_CAPTIONERS: dict[str, Captioner] = {}


_MODEL_LOCK = threading.Lock()


def make_captioner(config: CaptionerConfig, *, seed: int = 0) -> Captioner:
    """The captioner a config's ``captioner`` section asks for.

    Model backends are imported lazily and built once per process: shard tasks running in
    threads share one loaded model (or one server client configuration).
    """
    if config.backend == "template":
        return TemplateCaptioner(seed=seed, cloudy_threshold=config.cloudy_threshold)
    key = config.model_dump_json()
    with _MODEL_LOCK:
        if key not in _MODEL_CAPTIONERS:
            _MODEL_CAPTIONERS[key] = _build_model_captioner(config)
        return _MODEL_CAPTIONERS[key]


def check_in_process(config: CaptionerConfig) -> None:
    """Refuse an in-process backend's ``model`` or ``device`` before any work.

    Unchecked, either fails at model load, after the whole search and chip work, with an
    error that names no field (``OSError: Repo id must be ...``). The model must be a local
    model folder (with its ``config.json``) or a well-formed Hugging Face repo id; an id not in
    the local cache passes, since loading downloads it. The device must be one torch can
    parse, and a CUDA one must exist here; ``auto`` passes without importing torch.

    Args:
        config: The ``captioner`` section; its backend is one of ``IN_PROCESS_BACKENDS``.

    Raises:
        PreflightError: naming ``captioner.model`` or ``captioner.device``.
    """
    _check_model_source(config.model)
    # The vllm backend places the model itself and never reads captioner.device.
    if config.backend != "vllm" and config.device != "auto":
        _check_device(config.device)


def _check_model_source(model: str) -> None:
    folder = Path(model)
    if folder.exists():
        if not (folder / "config.json").is_file():
            raise PreflightError(
                "captioner.model",
                f"{model} has no config.json: give the folder of a Hugging Face model "
                "(config.json, weights, processor files) or a hub id such as "
                "llava-hf/llama3-llava-next-8b-hf",
            )
        return
    from huggingface_hub.errors import HFValidationError

    # Public, but huggingface_hub.utils re-exports it lazily, which strict mypy cannot see.
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    try:
        validate_repo_id(model)
    except HFValidationError as exc:
        raise PreflightError(
            "captioner.model",
            f"{model!r} is neither an existing local folder nor a Hugging Face repo id "
            f"(name or namespace/name): {exc}",
        ) from None


def _check_device(name: str) -> None:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise PreflightError(
            "captioner.device", f"{name!r} is not a torch device (auto, cpu, cuda:1...): {exc}"
        ) from None
    gpus = torch.cuda.device_count()
    if device.type == "cuda" and (device.index or 0) >= gpus:
        raise PreflightError(
            "captioner.device",
            f"torch sees {gpus} CUDA GPU(s) on this host, so there is no {name!r} (GPUs are "
            "numbered from 0, among those CUDA_VISIBLE_DEVICES shows)",
        )


def _build_model_captioner(config: CaptionerConfig) -> Captioner:
    if config.backend == "openai":
        from pipeline.caption.backends.openai import OpenAICaptioner

        return OpenAICaptioner.from_config(config)
    if config.backend == "transformers":
        from pipeline.caption.backends.transformers import TransformersCaptioner

        return TransformersCaptioner.from_config(config)
    if config.backend == "vllm":
        from pipeline.caption.backends.vllm import VllmCaptioner

        return VllmCaptioner.from_config(config)
    # The one way into the GPU engine (an import-linter contract names this import as its only
    # exception): lazy, so nothing of it, nor torch for it, loads until a config asks for it.
    from pipeline.caption.engines.captioner import FastLlavaCaptioner

    return FastLlavaCaptioner.from_config(config)
