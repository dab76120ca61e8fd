"""Captions from any OpenAI-compatible chat server: ``vllm serve`` in production.

Requests go out concurrently (``max_concurrency`` in flight per shard) from one asyncio loop
over a pooled HTTP client; images travel as base64 PNG data URLs. Transport errors, timeouts,
408/409/429 and 5xx answers are retried with exponential backoff and full jitter. When the
server stops answering at all, captioning pauses (one health probe per second) until it is
back, up to ``server_wait_s``; every request has a timeout, so a server that stays dead becomes
a per-sample failure (reason ``caption_server``), never a hang. Other 4xx answers fail at once
(``caption_http``). Token usage and latency are kept per sample. The client's CPU cost per
request decides whether one core can keep a GPU server fed: about 3 ms (image encoding, JSON,
HTTP), measured by benchmarks/caption_client.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from pipeline.caption.backends.model import CaptionBackendError, Completion, ModelCaptioner
from pipeline.caption.prompts import ChatMessage
from pipeline.core.config import CaptionerConfig
from pipeline.core.errors import PreflightError

__all__ = ["OpenAICaptioner"]

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
KEY_REFUSED = frozenset({401, 403})
"""Answers of a server that wants another API key, or one where none was sent."""


def _served_models(resp: httpx.Response) -> list[str]:
    """The model ids of an OpenAI ``/models`` answer; none when it is not that shape."""
    try:
        data = resp.json().get("data")
        return [str(m["id"]) for m in data] if isinstance(data, list) else []
    except (ValueError, AttributeError, KeyError, TypeError):
        return []


class OpenAICaptioner(ModelCaptioner):
    """Captioner for an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: API root ending in ``/v1``.
        model: Served model id.
        prompt: Prompt name or path.
        api_key: Bearer token, if the server wants one.
        api_key_env: The environment variable ``api_key`` was read from, named when the
            server refuses the key.
        max_concurrency: Requests in flight.
        timeout_s: Per-request timeout.
        max_retries: Retries per request.
        backoff_s: First retry delay (doubles per retry, full jitter).
        server_wait_s: How long a dead server is waited for before its samples fail.
        max_new_tokens: Generation limit per turn.
        temperature: Sampling temperature.
    """

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        prompt: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 32,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        server_wait_s: float = 300.0,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
    ) -> None:
        super().__init__(model, prompt, max_new_tokens=max_new_tokens, temperature=temperature)
        self.base_url = base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.server_wait_s = server_wait_s

    @classmethod
    def from_config(cls, config: CaptionerConfig) -> OpenAICaptioner:
        """Build from the ``captioner`` config section (the key is read from the environment)."""
        return cls(
            config.base_url,
            config.model,
            config.prompt,
            api_key=os.environ.get(config.api_key_env),
            api_key_env=config.api_key_env,
            max_concurrency=config.max_concurrency,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            backoff_s=config.backoff_s,
            server_wait_s=config.server_wait_s,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
        )

    def check(self) -> None:
        """Fail fast unless the server answers, takes the API key, and serves ``model``.

        The server must answer ``/models`` (or ``/health``) within 10 s. A ``model`` the
        server lists passes. Otherwise a one-token text-only chat asks for it, since a listed
        id is not the only one a server accepts: Ollama lists ``llava:latest`` and answers
        ``llava``, llama.cpp and TGI ignore the model field, ``transformers serve`` lists
        every model of its cache and none it was started with. Unchecked, a wrong model name,
        key or URL fails every caption of the run, one by one.

        Raises:
            PreflightError: naming ``captioner.base_url`` (no answer; no chat completions at
                that URL), ``captioner.api_key_env`` (HTTP 401/403) or ``captioner.model``
                (the chat names a model the server refuses).
        """
        errors = []
        models_url = f"{self.base_url}/models"
        for url in (models_url, f"{self.base_url.removesuffix('/v1')}/health"):
            try:
                resp = httpx.get(url, headers=self.headers, timeout=10)
            except httpx.HTTPError as exc:
                errors.append(f"{url}: {exc!r}")
                continue
            if resp.status_code in KEY_REFUSED:
                raise self._key_refused(url, resp.status_code)
            if resp.status_code == 200:
                served = _served_models(resp) if url == models_url else None
                if served is None or self.model not in served:
                    self._probe_model(served)
                return
            errors.append(f"{url}: HTTP {resp.status_code}")
        raise PreflightError(
            "captioner.base_url", f"caption server not healthy: {'; '.join(errors)}"
        )

    def _probe_model(self, served: list[str] | None) -> None:
        """Ask for one token of a text-only chat; refuse ``model`` on a 4xx answer.

        ``served`` is what ``/models`` lists (None: it did not answer 200, only ``/health``
        did, so a 404 may mean the URL, not the model). 5xx, 408, 409, 429 and transport
        errors pass: the server answered its health check, and the run retries those.
        """
        url = f"{self.base_url}/chat/completions"
        probe = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Answer with one word."}],
            "max_tokens": 1,
        }
        try:
            resp = httpx.post(
                url, content=orjson.dumps(probe), headers=self.headers, timeout=self.timeout_s
            )
        except httpx.HTTPError:
            return
        status = resp.status_code
        if status in KEY_REFUSED:
            raise self._key_refused(url, status)
        if not 400 <= status < 500 or status in RETRY_STATUS:
            return
        if status == 404 and served is None:
            raise PreflightError(
                "captioner.base_url",
                f"no chat completions at {url} (HTTP 404): base_url must be the API root, "
                "ending in /v1 for vLLM",
            )
        listed = f" (it lists {', '.join(served)})" if served else ""
        raise PreflightError(
            "captioner.model",
            f"the caption server at {self.base_url}{listed} refused model {self.model!r}: "
            f"HTTP {status} {resp.text[:300]}",
        )

    def _key_refused(self, url: str, status: int) -> PreflightError:
        """The error for a server that wants another API key (vLLM ``--api-key``)."""
        sent = "Authorization" in self.headers
        message = (
            f"the caption server answered HTTP {status} to {url}: it wants an API key (vllm "
            f"serve --api-key) and {'refuses the one sent' if sent else 'none was sent'}"
        )
        if self.api_key_env:
            state = "set" if sent else "unset or empty"
            message += f"; captioner.api_key_env names {self.api_key_env}, which is {state}"
        return PreflightError("captioner.api_key_env", message)

    def request_body(self, chat: list[ChatMessage]) -> bytes:
        """The JSON body of one chat completion request."""
        return orjson.dumps(
            {
                "model": self.model,
                "messages": chat,
                "max_tokens": self.max_new_tokens,
                "temperature": self.temperature,
            }
        )

    def complete_round(
        self, chats: Sequence[list[ChatMessage]], images: Sequence[bytes]
    ) -> list[Completion | Exception]:
        """Send every chat concurrently and wait for all answers or failures."""
        if not chats:
            return []
        return asyncio.run(self._round(chats))

    async def _round(self, chats: Sequence[list[ChatMessage]]) -> list[Completion | Exception]:
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        gate = asyncio.Semaphore(self.max_concurrency)
        watch = asyncio.Lock()
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0)),
            limits=limits,
            headers=self.headers,
        ) as client:

            async def one(chat: list[ChatMessage]) -> Completion | Exception:
                async with gate:
                    try:
                        return await self._complete(client, chat, watch)
                    except Exception as exc:  # recorded per sample by the caller
                        return exc

            return list(await asyncio.gather(*(one(c) for c in chats)))

    async def _server_back(self, client: httpx.AsyncClient, gate: asyncio.Lock) -> bool:
        """After a transport error: wait (up to ``server_wait_s``) until the server is healthy.

        One request probes while the others wait on ``gate``, so a dead server sees one
        health check per second, not one per sample. Returns False if it stayed down.
        """
        root = self.base_url.removesuffix("/v1")
        async with gate:
            deadline = time.monotonic() + self.server_wait_s
            while True:
                for url in (f"{root}/health", f"{self.base_url}/models"):
                    try:
                        if (await client.get(url, timeout=5.0)).status_code == 200:
                            return True
                    except httpx.HTTPError:
                        pass
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(1.0)

    async def _complete(
        self, client: httpx.AsyncClient, chat: list[ChatMessage], watch: asyncio.Lock
    ) -> Completion:
        body = self.request_body(chat)
        url = f"{self.base_url}/chat/completions"
        last = ""
        attempt = 0
        while attempt <= self.max_retries:
            if attempt:
                # Full jitter: spread retries of many samples so a restarted server is not
                # hit by all of them at once.
                delay = self.backoff_s * 2 ** (attempt - 1)
                await asyncio.sleep(random.uniform(0, min(delay, 60.0)))
            t0 = time.perf_counter()
            try:
                resp = await client.post(url, content=body)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                # A dead server pauses captioning until it is back; the wait costs no attempt.
                if self.server_wait_s > 0 and await self._server_back(client, watch):
                    continue
                attempt += 1
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                attempt += 1
                continue
            if resp.status_code != 200:
                raise CaptionBackendError(
                    "caption_http", f"HTTP {resp.status_code}: {resp.text[:300]}"
                )
            return self._parse(resp.content, time.perf_counter() - t0)
        raise CaptionBackendError(
            "caption_server", f"no answer after {self.max_retries + 1} attempts: {last}"
        )

    @staticmethod
    def _parse(content: bytes, latency: float) -> Completion:
        try:
            data: dict[str, Any] = orjson.loads(content)
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise CaptionBackendError(
                "caption_bad_response", f"unreadable response: {exc!r}: {content[:200]!r}"
            ) from None
        usage = data.get("usage") or {}
        return Completion(
            text=str(text),
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_s=latency,
        )
