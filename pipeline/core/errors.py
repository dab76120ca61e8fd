"""Errors raised by eocap, one place for all of them (torchgeo style)."""

from __future__ import annotations

__all__ = [
    "AssetError",
    "ConfigError",
    "EocapError",
    "PreflightError",
    "SampleFailure",
]


class EocapError(Exception):
    """Base class of every error eocap raises on purpose."""


class ConfigError(EocapError):
    """The run config is invalid; the message names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"config field '{field}': {message}")


class PreflightError(ConfigError):
    """A config value is well-formed but unusable (path missing, server unreachable)."""


class AssetError(EocapError):
    """A STAC item lacks a band or asset the run needs."""


class SampleFailure(EocapError):
    """One sample failed in one stage; recorded in its row, never fatal to the shard.

    Attributes:
        reason: A short, stable machine-readable reason (``no_scene``, ``cog_read``...),
            used to count failures by reason in shard stats.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")
