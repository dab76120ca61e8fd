"""Choosing a captioner from its configuration; model captioners are built once per process."""

from __future__ import annotations

import threading

from pipeline.caption.interface import Captioner
from pipeline.caption.template import TemplateCaptioner
from pipeline.core.config import CaptionerConfig

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
