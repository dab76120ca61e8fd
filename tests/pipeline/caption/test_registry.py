"""The preflight check of in-process captioning backends (model and device)."""

from __future__ import annotations

import pytest
import torch

from pipeline.caption.registry import check_in_process
from pipeline.core.config import CaptionerConfig
from pipeline.core.errors import PreflightError


def in_process(model: str, device: str = "auto", backend: str = "transformers") -> CaptionerConfig:
    return CaptionerConfig.model_validate({"backend": backend, "model": model, "device": device})


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_a_model_folder_on_an_existing_device_passes(tiny_model, device):
    check_in_process(in_process(str(tiny_model), device))


def test_a_hub_id_passes_without_being_in_the_cache():
    # Production downloads it at load; the check reads no network and no cache.
    check_in_process(in_process("llava-hf/llama3-llava-next-8b-hf"))


def test_a_folder_without_config_json_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(PreflightError) as info:
        check_in_process(in_process(str(tmp_path)))
    assert info.value.field == "captioner.model"
    assert f"{tmp_path} has no config.json" in str(info.value)


@pytest.mark.parametrize("model", ["/models/no-such-llava", "llava hf/llama3", "a/b/c"])
def test_neither_a_folder_nor_a_repo_id_is_refused(model):
    with pytest.raises(PreflightError) as info:
        check_in_process(in_process(model, backend="fast"))
    assert info.value.field == "captioner.model"
    assert f"{model!r} is neither an existing local folder nor a Hugging Face repo id" in str(
        info.value
    )


def test_a_device_torch_cannot_parse_is_refused(tiny_model):
    with pytest.raises(PreflightError) as info:
        check_in_process(in_process(str(tiny_model), "nonsense"))
    assert info.value.field == "captioner.device"
    assert "'nonsense' is not a torch device" in str(info.value)


def test_a_cuda_device_this_host_lacks_is_refused(tiny_model):
    missing = f"cuda:{torch.cuda.device_count()}"  # cuda:0 on a CPU host
    with pytest.raises(PreflightError) as info:
        check_in_process(in_process(str(tiny_model), missing))
    assert info.value.field == "captioner.device"
    assert f"so there is no {missing!r}" in str(info.value)


def test_the_vllm_backend_reads_no_device(tiny_model):
    check_in_process(in_process(str(tiny_model), "nonsense", backend="vllm"))
