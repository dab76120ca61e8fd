"""Inference engines: fast paths that run a captioning model's own weights on a GPU.

Nothing here is imported by the default captioning path: the captioner registry loads
:mod:`~pipeline.caption.engines.captioner` by name, only for ``captioner.backend: fast``. This
package imports nothing heavy itself: its modules need the ``models`` extra (torch,
transformers); the Triton decode kernel needs the ``gpu`` extra.

* :mod:`~pipeline.caption.engines.captioner`: :class:`FastLlavaCaptioner`, the engine behind
  the captioner interface (the ``transformers`` backend's loading, prompts and accounting);
* :mod:`~pipeline.caption.engines.fast_llava`: :class:`FastLlavaEngine`, continuous batching
  (ragged prompts, per-row stops, refilled slots) with split prefill and CUDA-graph decode over a
  LLaVA-Next model (its requests and token geometry);
* :mod:`~pipeline.caption.engines.layers`: the Llama and CLIP layer halves around attention,
  fused by ``torch.compile``;
* :mod:`~pipeline.caption.engines.autotune`: the attention variants, checked against the math
  backend and timed on the real shapes;
* :mod:`~pipeline.caption.engines.kernels`: the Triton GQA-folded decode attention kernel,
  imported only where Triton is installed;
* :mod:`~pipeline.caption.engines.timing`: device-side timing.

``benchmarks/caption_gpu.py`` measures the engine against plain ``generate``.
"""
