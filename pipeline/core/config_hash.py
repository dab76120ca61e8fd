"""The configuration hash: what makes two runs' shards the same data.

A resume refuses shards written under another hash; fields that only say how to reach a service
(not what it computes) are left out of it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipeline.core.config import LATEST_RELEASE, RunConfig

CAPTION_TRANSPORT_HASHED_AS: dict[str, Any] = {
    "base_url": "http://127.0.0.1:8000/v1",
    "api_key_env": "OPENAI_API_KEY",
    "max_concurrency": 32,
    "timeout_s": 120.0,
    "max_retries": 4,
    "backoff_s": 1.0,
    "server_wait_s": 300.0,
    "gpu_workers": 1,
}
"""Captioner fields that only say how the server is reached, with the values hashed for them."""


def config_hash(config: RunConfig) -> str:
    """Hash of the config fields that change the data (not paths, workers or shard size).

    Raises:
        ValueError: for ``overture.release: latest``: only a resolved release identifies the
            data (build shards with :attr:`pipeline.runner.plan.RunPlan.config`).
    """
    if config.overture.release == LATEST_RELEASE:
        raise ValueError("overture.release 'latest' is not resolved: use the RunPlan's config")
    data = config.model_dump(mode="json")
    for key in ("output", "runtime"):
        data.pop(key, None)
    data["stac"].pop("api_url", None)  # the same catalog may be served from another address
    data["stac"].pop("timeout_s", None)
    data["stac"].pop("signing_key_env", None)  # which variable holds a key is no data
    # Read concurrency does not change the data: hashed as its historical defaults, so the
    # hash of an existing output stays valid whatever these are set to.
    data["chips"].update(read_threads=8, max_requests_per_host=16)
    if data["sar"] is None:
        del data["sar"]  # no SAR hashes as before the section existed: existing runs keep theirs
    else:
        for transport in ("api_url", "signing", "signing_key_env"):
            data["sar"].pop(transport, None)
        if data["sar"]["coherence"] is None:
            del data["sar"]["coherence"]  # as above: SAR runs without coherence keep theirs
    data["overture"].pop("source", None)  # the release id identifies the data
    data["overture"].pop("catalog_url", None)  # only where `latest` was looked up
    # How the caption server is reached and loaded does not change the captions: hashed as
    # the historical defaults, so a build host and a caption host may name the same model
    # server by different addresses, and existing outputs keep their hash.
    data["captioner"].update(CAPTION_TRANSPORT_HASHED_AS)
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
