"""Model-backed captioners: OpenAI-compatible server, transformers in-process, vLLM in-process."""
