"""docker/compose.yaml as Docker Compose reads it (`docker-compose config`, no daemon needed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from pipeline.core.config_hash import CAPTION_TRANSPORT_HASHED_AS
from tests.conftest import REPO_ROOT, require_service

COMPOSE_FILE = REPO_ROOT / "docker" / "compose.yaml"
PROFILES = ["server", "build", "gpu", "review", "review-admin"]
DOCKER_COMPOSE = shutil.which("docker-compose")


@pytest.fixture(scope="module", autouse=True)
def _docker_compose():
    require_service("docker-compose", DOCKER_COMPOSE is not None)


def compose_config(*profiles: str, **env: str) -> dict:
    """The compose file with every variable resolved, as ``docker-compose config`` prints it."""
    args = [str(DOCKER_COMPOSE), "-f", str(COMPOSE_FILE)]
    for profile in profiles:
        args += ["--profile", profile]
    # Only these variables: a VLLM_IMAGE_TAG or PREFECT_API_URL of the caller must not leak in.
    clean_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    done = subprocess.run(
        [*args, "config"], env=clean_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def services() -> dict:
    return compose_config(*PROFILES)["services"]


def seconds(duration: str) -> float:
    """Compose durations: "45m" (docker-compose 1.x) or "45m0s" (2.x)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """Target -> (source, read-only) for each volume, short or long syntax."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            out[target] = (source, mode == ["ro"])
        else:
            out[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
    return out


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_is_valid(profile):
    expected = {
        "server": {"prefectdb", "prefect-server"},
        "build": {"dask-scheduler", "dask-worker", "build"},
        "gpu": {"vllm", "caption"},
        "review": {"review", "reviewdb"},
        "review-admin": {"review-admin", "reviewdb"},
    }[profile]
    assert expected <= set(compose_config(profile)["services"])


def test_vllm_is_pinned_and_may_wait_for_its_first_download(services):
    vllm = services["vllm"]
    image, tag = vllm["image"].rsplit(":", 1)
    assert image == "vllm/vllm-openai" and re.fullmatch(r"v\d+\.\d+\.\d+", tag), vllm["image"]
    cu129 = compose_config("gpu", VLLM_IMAGE_TAG=f"{tag}-cu129")["services"]["vllm"]
    assert cu129["image"] == f"vllm/vllm-openai:{tag}-cu129"
    assert seconds(vllm["healthcheck"]["start_period"]) >= 30 * 60


def test_vllm_flags(services):
    flags = dict(arg.split("=", 1) for arg in services["vllm"]["command"] if arg.startswith("--"))
    # vLLM's defaults now, or lower than its defaults: not set.
    assert not {"--enable-chunked-prefill", "--enable-prefix-caching", "--max-num-seqs"} & set(
        flags
    )
    assert json.loads(flags["--limit-mm-per-prompt"]) == {"image": 1}
    assert float(flags["--mm-processor-cache-gb"]) > 0
    assert services["vllm"]["command"][0] == "llava-hf/llama3-llava-next-8b-hf"


def test_one_prefect_server_on_postgresql_for_every_host(services):
    server = services["prefect-server"]
    assert server["entrypoint"][:5] == ["prefect", "server", "start", "--host", "0.0.0.0"]
    url = server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://") and "@prefectdb:5432/" in url
    for name in ("build", "dask-worker", "caption"):
        assert services[name]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    # Host B: its caption worker reports to host A's server, where the eocap-caption limit is.
    host_b = compose_config("gpu", PREFECT_API_URL="http://host-a:4200/api")["services"]
    assert host_b["caption"]["environment"]["PREFECT_API_URL"] == "http://host-a:4200/api"


def test_build_on_dask_and_captions_on_the_gpu_host(services):
    build, caption = services["build"]["environment"], services["caption"]["environment"]
    assert build["EOCAP_RUNTIME__TASK_RUNNER"] == "dask"
    assert build["EOCAP_RUNTIME__DASK_ADDRESS"] == "tcp://dask-scheduler:8786"
    assert "tcp://dask-scheduler:8786" in services["dask-worker"]["entrypoint"]
    assert build["EOCAP_CAPTIONER__STAGE"] == "separate"
    # The hashed captioner fields are the same on both hosts, or the caption stage refuses the
    # build's output; only how the server is reached may differ (the local vLLM on B).
    transport = {f"EOCAP_CAPTIONER__{k.upper()}" for k in CAPTION_TRANSPORT_HASHED_AS}

    def hashed(env: dict) -> dict:
        return {k: v for k, v in env.items() if k.startswith("EOCAP_CAPTIONER__")} | {
            k: None for k in transport
        }

    assert hashed(build) == hashed(caption)
    assert caption["EOCAP_CAPTIONER__BASE_URL"] == "http://vllm:8000/v1"
    assert services["caption"]["command"][0] == "caption"
    assert services["caption"]["depends_on"]["vllm"]["condition"] == "service_healthy"


def test_review_state_is_a_volume_and_the_dataset_read_only(services):
    review, admin = mounts(services["review"]), mounts(services["review-admin"])
    assert review["/data"][1] is True  # read-only
    assert review["/data/review"] == ("review-state", False)
    # Only `review apply` writes into the dataset (shards/_review/).
    assert admin["/data"][1] is False and admin["/data/review"] == ("review-state", False)


@pytest.mark.parametrize("dockerfile", ["pipeline.Dockerfile", "review.Dockerfile"])
def test_images_copy_every_package_of_the_wheel(dockerfile):
    """`eocap` imports every package (flows.cli registers the trainer's and review's commands)."""
    import tomllib

    include = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = {name.rstrip("*") for name in include}
    text = (REPO_ROOT / "docker" / dockerfile).read_text()
    copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ")}
    assert packages <= copied, packages - copied
