"""A real SAS token endpoint shaped like Planetary Computer's, on 127.0.0.1, for signing tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException

from tests.faults import serve_in_thread


@dataclass
class TokenEndpoint:
    """The endpoint's URL, the tokens it gave, and what it asks; tokens expire at ``expiry``."""

    url: str
    calls: list[str] = field(default_factory=list)
    expiry: dt.datetime = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
    account_key: str | None = None
    """Tokens only for requests with this Ocp-Apim-Subscription-Key (as sentinel-1-rtc's)."""


@contextmanager
def serve_token_endpoint() -> Iterator[TokenEndpoint]:
    """Serve ``GET .../api/sas/v1/token/{account}/{container}`` until the block ends."""
    app = FastAPI()
    endpoint = TokenEndpoint(url="")

    @app.get("/api/sas/v1/token/{account}/{container}")
    def token(
        account: str,
        container: str,
        key: Annotated[str | None, Header(alias="Ocp-Apim-Subscription-Key")] = None,
    ) -> dict[str, str]:
        if endpoint.account_key is not None and key != endpoint.account_key:
            raise HTTPException(403, "Forbidden: this dataset requires an account")
        endpoint.calls.append(f"{account}/{container}")
        n = len(endpoint.calls)
        expiry = endpoint.expiry.isoformat().replace("+00:00", "Z")
        return {"msft:expiry": expiry, "token": f"sv=1&sig={account}{n}"}

    with serve_in_thread(app) as base:
        endpoint.url = f"{base}/api/sas/v1/token"
        yield endpoint
