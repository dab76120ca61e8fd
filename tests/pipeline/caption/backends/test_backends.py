"""Model backends against a real OpenAI-compatible server (`transformers serve`) and in-process.

The model is a tiny random-weight LLaVA-Next with the real architecture
(pipeline/demo/tiny_llava.py):
its text is random, its mechanics are real.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi import FastAPI, Request, Response
from PIL import Image

from pipeline.caption.backends.openai import OpenAICaptioner
from pipeline.caption.backends.transformers import TransformersCaptioner
from pipeline.core.config import CaptionerConfig
from pipeline.core.errors import PreflightError
from pipeline.demo.servers import free_port, start_transformers_server
from tests.faults import serve_in_thread
from tests.pipeline.caption.test_template import LAKE_TOWN, make_input


def inputs(n: int):
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (264, 264, 3), dtype=np.uint8)).save(buf, format="PNG")
    return [
        dataclasses.replace(make_input(LAKE_TOWN, sid=f"s_{i}"), rgb_png=buf.getvalue())
        for i in range(n)
    ]


def client(url: str, prompt: str = "grounded-v1", model: str = "tiny", **kw) -> OpenAICaptioner:
    kw.setdefault("max_new_tokens", 12)
    return OpenAICaptioner(url.rstrip("/"), model, prompt, **kw)


@pytest.mark.parametrize("prompt", ["grounded-v1", "llama3-ms-clip-v1"])
def test_openai_backend_against_transformers_serve(caption_server, tiny_model, prompt):
    cap = client(caption_server.url, prompt, str(tiny_model), max_concurrency=3)
    cap.check()
    results = cap.caption_batch(inputs(4))
    assert [r.sample_id for r in results] == [f"s_{i}" for i in range(4)]
    turns = 1 if prompt == "grounded-v1" else 4
    for r in results:
        assert r.caption is not None and r.error_reason is None
        assert r.completion_tokens == 12 * turns and r.prompt_tokens > 100
        assert r.finish_reason == "length" and r.latency_s > 0
        assert len(r.qa) == turns - 1
    assert cap.prompt_version.startswith(prompt + "+")
    assert json.loads(cap.generation_params) == {"max_new_tokens": 12, "temperature": 0.0}
    # The in-process backend runs the same model: same greedy text, same token counts.
    local = TransformersCaptioner(
        str(tiny_model), prompt, device="cpu", batch_size=3, max_new_tokens=12
    ).caption_batch(inputs(4))
    assert [r.caption for r in local] == [r.caption for r in results]
    assert [r.prompt_tokens for r in local] == [r.prompt_tokens for r in results]


def test_check_refuses_a_model_the_server_does_not_serve(caption_server, tiny_model):
    # transformers serve lists the models of its cache (none here), not the one it is pinned
    # to, and answers 400 for another. Unchecked, every caption would fail with caption_http.
    with pytest.raises(PreflightError) as info:
        client(caption_server.url, model="llava-hf/llama3-llava-next-8b-hf").check()
    assert info.value.field == "captioner.model"
    assert "refused model 'llava-hf/llama3-llava-next-8b-hf': HTTP 400" in str(info.value)
    client(caption_server.url, model=str(tiny_model)).check()


def test_check_names_the_base_url_when_it_lacks_v1(caption_server, tiny_model):
    # The server's root answers /health but has no /models and no /chat/completions.
    root = caption_server.url.rstrip("/").removesuffix("/v1")
    with pytest.raises(PreflightError) as info:
        client(root, model=str(tiny_model)).check()
    assert info.value.field == "captioner.base_url"
    assert f"no chat completions at {root}/chat/completions (HTTP 404)" in str(info.value)


def model_server(listed: str, accepted: set[str], refusal: Callable[[str], dict]) -> FastAPI:
    """A chat server that lists one model id, answers a chat for the ``accepted`` ones and
    404 with ``refusal(model)`` for others."""
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": listed, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        model = (await request.json())["model"]
        if model not in accepted:
            return Response(json.dumps(refusal(model)), status_code=404)
        return Response('{"choices": [{"message": {"content": "A"}}]}')

    return app


# vLLM lists its --served-model-name (not the path it loaded) and answers 404 for others.
VLLM = model_server(
    "llava-next-8b",
    {"llava-next-8b"},
    lambda model: {
        "object": "error",
        "message": f"The model `{model}` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    },
)
# Ollama lists tagged names and takes a name without its tag.
OLLAMA = model_server(
    "llava:latest",
    {"llava", "llava:latest"},
    lambda model: {"error": {"message": f"model '{model}' not found", "type": "api_error"}},
)


def test_check_refuses_a_model_a_listing_server_answers_404_for():
    with serve_in_thread(VLLM) as base:
        with pytest.raises(PreflightError) as info:
            client(f"{base}/v1", model="llava-hf/llama3-llava-next-8b-hf").check()
        assert info.value.field == "captioner.model"
        assert (
            "(it lists llava-next-8b) refused model 'llava-hf/llama3-llava-next-8b-hf': HTTP 404"
            in str(info.value)
        )
        client(f"{base}/v1", model="llava-next-8b").check()


def test_check_passes_a_model_the_server_accepts_under_another_listed_id():
    with serve_in_thread(OLLAMA) as base:
        client(f"{base}/v1", model="llava").check()
        with pytest.raises(PreflightError, match="refused model 'bakllava'"):
            client(f"{base}/v1", model="bakllava").check()


@pytest.mark.parametrize("models_need_key", [True, False])
def test_check_names_the_key_variable_when_the_server_refuses_the_key(models_need_key, monkeypatch):
    # vllm serve --api-key: every /v1 path wants "Bearer <key>", /health none. Some proxies
    # list their models to anyone: then the chat probe meets the 401.
    app = FastAPI()

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == "Bearer s3cret"

    @app.get("/health")
    def health() -> dict:
        return {}

    @app.get("/v1/models")
    def models(request: Request) -> Response:
        if models_need_key and not authorized(request):
            return Response('{"error": "Unauthorized"}', status_code=401)
        return Response('{"object": "list", "data": [{"id": "llava-next-8b"}]}')

    @app.post("/v1/chat/completions")
    def chat(request: Request) -> Response:
        if not authorized(request):
            return Response('{"error": "Unauthorized"}', status_code=401)
        return Response('{"choices": [{"message": {"content": "A"}}]}')

    config = CaptionerConfig(backend="openai", model="llava", api_key_env="EOCAP_TEST_KEY")
    with serve_in_thread(app) as base:
        config = config.model_copy(update={"base_url": f"{base}/v1"})
        monkeypatch.delenv("EOCAP_TEST_KEY", raising=False)
        for key, says in [(None, "none was sent"), ("wrong", "refuses the one sent")]:
            if key:
                monkeypatch.setenv("EOCAP_TEST_KEY", key)
            with pytest.raises(PreflightError) as info:
                OpenAICaptioner.from_config(config).check()
            assert info.value.field == "captioner.api_key_env"
            assert f"HTTP 401 to {base}/v1/" in str(info.value)
            assert says in str(info.value)
            state = "set" if key else "unset or empty"
            assert f"captioner.api_key_env names EOCAP_TEST_KEY, which is {state}" in str(
                info.value
            )
        monkeypatch.setenv("EOCAP_TEST_KEY", "s3cret")
        OpenAICaptioner.from_config(config).check()


def test_health_check_of_a_dead_server():
    with pytest.raises(PreflightError) as info:
        client(f"http://127.0.0.1:{free_port()}/v1").check()
    assert info.value.field == "captioner.base_url"


def test_server_killed_mid_run_fails_samples_cleanly(tiny_model, tmp_path):
    server = start_transformers_server(tiny_model, log_dir=tmp_path)
    cap = client(
        server.url,
        "llama3-ms-clip-v1",
        str(tiny_model),
        max_concurrency=2,
        max_retries=2,
        backoff_s=0.05,
        timeout_s=10,
        server_wait_s=2,  # it stays dead: wait 2 s, then fail its samples
        max_new_tokens=24,
    )

    def kill_after_first_answers() -> None:
        while server.log_path.read_text().count("POST /v1/chat/completions") < 4:
            time.sleep(0.01)
        server.stop()

    killer = threading.Thread(target=kill_after_first_answers)
    killer.start()
    t0 = time.monotonic()
    results = cap.caption_batch(inputs(8))
    killer.join()
    assert time.monotonic() - t0 < 60  # bounded by timeouts and retries, never a hang
    assert len(results) == 8
    failed = [r for r in results if r.caption is None]
    assert failed, "the server died mid-run, some samples must fail"
    for r in failed:
        assert r.error_reason == "caption_server" and "attempts" in r.error_message
    for r in results:
        assert (r.caption is None) != (r.error_reason is None)  # a caption or a reason, not both

    # The server comes back: the same samples succeed.
    with start_transformers_server(tiny_model, log_dir=tmp_path / "again") as again:
        retry = client(again.url, "llama3-ms-clip-v1", str(tiny_model)).caption_batch(inputs(8))
    assert all(r.caption for r in retry)


@pytest.fixture
def garbage_server() -> Iterator[str]:
    """A real HTTP server that answers chat requests with garbage, in turns."""
    app = FastAPI()
    answers = iter(["", "not json at all", json.dumps({"choices": []}), "ok"] * 10)

    @app.post("/v1/chat/completions")
    def chat() -> Response:
        body = next(answers)
        if body == "ok":
            body = json.dumps(
                {
                    "choices": [
                        {
                            "finish_reason": "stop",
                            "message": {"content": "I'm sorry, I cannot describe this image."},
                        }
                    ]
                }
            )
        return Response(body, media_type="application/json")

    with serve_in_thread(app) as base:
        yield f"{base}/v1"


def test_garbage_answers_are_failures_or_flagged(garbage_server):
    from pipeline.caption.checks import check_caption

    results = client(garbage_server, max_concurrency=1, max_retries=0).caption_batch(inputs(4))
    reasons = [r.error_reason for r in results]
    assert reasons[:3] == ["caption_bad_response"] * 3
    assert (
        results[3].caption
        and "refusal"
        in check_caption(
            results[3].caption,
            finish_reason="stop",
            context=LAKE_TOWN,
            stats=make_input(LAKE_TOWN).stats,
        ).flags
    )


def test_vllm_backend_explains_how_to_get_it():
    from pipeline.caption.backends.vllm import VllmCaptioner

    with pytest.raises(ImportError, match="separate environment"):
        VllmCaptioner("llava-hf/llama3-llava-next-8b-hf", "grounded-v1")


def test_server_killed_and_restarted_mid_run_pauses_and_resumes(
    caption_server, tiny_model, tmp_path
):
    undisturbed = client(
        caption_server.url, "llama3-ms-clip-v1", str(tiny_model), max_new_tokens=24
    ).caption_batch(inputs(8))
    port = free_port()
    server = start_transformers_server(tiny_model, port=port, log_dir=tmp_path / "a")
    restarted: list[object] = []

    def kill_then_restart() -> None:
        while server.log_path.read_text().count("POST /v1/chat/completions") < 4:
            time.sleep(0.01)
        server.stop()
        time.sleep(2.0)  # down for a while
        restarted.append(start_transformers_server(tiny_model, port=port, log_dir=tmp_path / "b"))

    thread = threading.Thread(target=kill_then_restart)
    thread.start()
    cap = client(
        server.url,
        "llama3-ms-clip-v1",
        str(tiny_model),
        max_concurrency=2,
        max_retries=1,
        backoff_s=0.05,
        timeout_s=10,
        server_wait_s=120,
        max_new_tokens=24,
    )
    results = cap.caption_batch(inputs(8))
    thread.join()
    for handle in restarted:
        handle.stop()  # type: ignore[attr-defined]
    assert restarted, "the server was restarted"
    assert [r.caption for r in results] == [r.caption for r in undisturbed]
    assert all(r.error_reason is None for r in results)
