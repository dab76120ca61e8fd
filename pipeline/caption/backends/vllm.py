"""Captions from an in-process vLLM engine (optional; GPU hosts with the ``vllm`` extra).

vLLM pins a FastAPI older than Prefect needs, so it cannot share eocap's environment: install
it in a separate environment (``pip install eocap[vllm]`` there, or use the vLLM container in
docker/) and run the caption stage from that environment. For most deployments the ``openai``
backend against ``vllm serve`` is simpler and scales across GPUs; this backend avoids HTTP for
single-GPU batch jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.caption.backends.model import Completion, ModelCaptioner
from pipeline.caption.prompts import ChatMessage
from pipeline.core.config import CaptionerConfig

__all__ = ["VllmCaptioner"]


class VllmCaptioner(ModelCaptioner):
    """LLaVA-Next through ``vllm.LLM.chat`` (images as data URLs, batched by vLLM itself).

    Raises:
        ImportError: if vLLM is not installed, with how to get it.
    """

    backend = "vllm"

    def __init__(
        self, model: str, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0
    ) -> None:
        super().__init__(model, prompt, max_new_tokens=max_new_tokens, temperature=temperature)
        try:
            import vllm
        except ImportError as exc:
            raise ImportError(
                "captioner.backend 'vllm' needs vLLM, which cannot share eocap's environment "
                "(FastAPI pins). Use backend 'openai' with `vllm serve` (docker/compose.yaml), "
                "or install vllm in a separate environment: see docs/captioning.md"
            ) from exc
        self._vllm: Any = vllm
        self.llm: Any = vllm.LLM(
            model=model, limit_mm_per_prompt={"image": 1}, enable_prefix_caching=True
        )
        self.params: Any = vllm.SamplingParams(max_tokens=max_new_tokens, temperature=temperature)

    @classmethod
    def from_config(cls, config: CaptionerConfig) -> VllmCaptioner:
        """Build from the ``captioner`` config section."""
        return cls(
            config.model,
            config.prompt,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
        )

    def complete_round(
        self, chats: Sequence[list[ChatMessage]], images: Sequence[bytes]
    ) -> list[Completion | Exception]:
        """Let vLLM schedule the whole round (continuous batching, prefix caching)."""
        try:
            outputs = self.llm.chat(list(chats), self.params, use_tqdm=False)
        except Exception as exc:
            return [exc] * len(chats)
        done: list[Completion | Exception] = []
        for out in outputs:
            gen = out.outputs[0]
            done.append(
                Completion(
                    text=gen.text,
                    finish_reason=gen.finish_reason,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(gen.token_ids),
                    latency_s=0.0,
                )
            )
        return done
