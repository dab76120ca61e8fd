"""Where ``s3://`` URLs are read from: AWS, or an S3-compatible server named by the environment.

The settings come from the AWS SDKs' standard environment variables, so one export points every
reader (DuckDB httpfs for Overture, GDAL for COGs, boto3 in tools) at the same store:

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: an S3-compatible server
  (``http://127.0.0.1:9000``, MinIO, Ceph, moto, a cloud's S3 API). Unset: AWS itself.
- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``: credentials; without
  them requests are unsigned (public buckets).
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION``: the signing region (default ``us-east-1``).

Without an endpoint, Overture's public bucket (:data:`OVERTURE_BUCKET`) is always read anonymously
in its own region, whatever credentials the environment holds for other buckets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["OVERTURE_BUCKET", "OVERTURE_REGION", "S3Settings"]

OVERTURE_BUCKET = "overturemaps-us-west-2"
"""Overture Maps' public release bucket (anonymous reads)."""

OVERTURE_REGION = "us-west-2"
"""The region of :data:`OVERTURE_BUCKET`."""

DEFAULT_REGION = "us-east-1"
"""The signing region when the environment names none (what S3-compatible servers expect)."""


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class S3Settings:
    """How to reach ``s3://`` URLs, as the AWS environment variables say.

    Attributes:
        endpoint: ``host:port`` of an S3-compatible server; ``None`` for AWS.
        use_ssl: Whether the endpoint speaks HTTPS (its URL's scheme).
        region: The signing region.
        key_id: Access key id; ``None`` for unsigned requests.
        secret: Secret access key.
        session_token: Temporary credentials' token.
    """

    endpoint: str | None = None
    use_ssl: bool = True
    region: str = DEFAULT_REGION
    key_id: str | None = None
    secret: str | None = None
    session_token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        """The settings in ``env`` (default: this process's environment).

        Raises:
            ValueError: naming the variable if the endpoint URL has no host.
        """
        env = os.environ if env is None else env
        name = "AWS_ENDPOINT_URL_S3" if env.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
        url = env.get(name) or None
        endpoint, use_ssl = None, True
        if url is not None:
            parts = urlsplit(url if "://" in url else f"https://{url}")
            if not parts.netloc:
                raise ValueError(f"{name}={url!r} names no host: give http(s)://host:port")
            endpoint, use_ssl = parts.netloc, parts.scheme != "http"
        return cls(
            endpoint=endpoint,
            use_ssl=use_ssl,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )

    def obstore(self, bucket: str, prefix: str | None = None) -> Any:
        """An obstore ``S3Store`` for ``s3://bucket/prefix`` with these settings."""
        from obstore.store import S3Store

        options: dict[str, Any] = {"region": self.region}
        if self.signed:
            options |= {"access_key_id": self.key_id, "secret_access_key": self.secret}
            if self.session_token is not None:
                options["session_token"] = self.session_token
        else:
            options["skip_signature"] = True
        if self.endpoint is not None:
            # A local server (MinIO, moto) has no virtual-host bucket names, and may be http.
            scheme = "https" if self.use_ssl else "http"
            options |= {"endpoint": f"{scheme}://{self.endpoint}"}
            options["virtual_hosted_style_request"] = False
            options["client_options"] = {"allow_http": not self.use_ssl}
        return S3Store(bucket, prefix=prefix, **options)

    @property
    def signed(self) -> bool:
        """Whether requests are signed (both key id and secret are set)."""
        return self.key_id is not None and self.secret is not None

    def duckdb_secrets(self) -> list[str]:
        """``CREATE SECRET`` statements for DuckDB's httpfs (temporary, this connection only).

        With an endpoint, one secret sends every ``s3://`` URL there (path-style URLs, as
        S3-compatible servers expect). Without one, Overture's bucket gets an anonymous secret
        in its region, and other buckets use the environment's credentials, if any.
        """
        if self.endpoint is not None:
            return [
                self._secret(
                    "eocap_s3",
                    ENDPOINT=self.endpoint,
                    URL_STYLE="path",
                    USE_SSL=self.use_ssl,
                    REGION=self.region,
                    **self._credentials(),
                )
            ]
        overture = self._secret(
            "eocap_overture", REGION=OVERTURE_REGION, SCOPE=f"s3://{OVERTURE_BUCKET}"
        )
        if not self.signed:
            return [overture]
        return [overture, self._secret("eocap_s3", REGION=self.region, **self._credentials())]

    def gdal_options(self) -> dict[str, str]:
        """GDAL's ``/vsis3/`` configuration for these settings.

        Without an endpoint requests stay unsigned, as they always were (Earth Search's and
        Overture's buckets are public): eocap never sends AWS credentials to AWS through GDAL.
        """
        if self.endpoint is None:
            return {"AWS_NO_SIGN_REQUEST": "YES"}
        options = {
            "AWS_S3_ENDPOINT": self.endpoint,
            "AWS_HTTPS": "YES" if self.use_ssl else "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_REGION": self.region,
        }
        if not self.signed:
            return {**options, "AWS_NO_SIGN_REQUEST": "YES"}
        assert self.key_id is not None and self.secret is not None
        options |= {
            "AWS_NO_SIGN_REQUEST": "NO",
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
        }
        if self.session_token is not None:
            options["AWS_SESSION_TOKEN"] = self.session_token
        return options

    def _credentials(self) -> dict[str, str]:
        if not self.signed:
            return {}
        assert self.key_id is not None and self.secret is not None
        creds = {"KEY_ID": self.key_id, "SECRET": self.secret}
        if self.session_token is not None:
            creds["SESSION_TOKEN"] = self.session_token
        return creds

    @staticmethod
    def _secret(name: str, **params: str | bool) -> str:
        fields = ", ".join(
            f"{key} {str(value).lower() if isinstance(value, bool) else _sql_string(value)}"
            for key, value in params.items()
        )
        return f"CREATE OR REPLACE SECRET {name} (TYPE s3, {fields})"
