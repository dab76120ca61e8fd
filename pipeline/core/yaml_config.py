"""Typed YAML + environment configuration for any pydantic model: load, validate, document.

The run config (:mod:`pipeline.core.config`) and the train config (``trainer.config``) are both
YAML files whose every field has a default and a description. One loader serves both: YAML,
then environment overrides (``<PREFIX>`` followed by the field path with ``__`` between levels,
values parsed as YAML scalars), then validation that names the first bad field in a
:class:`~pipeline.core.errors.ConfigError`. :func:`documented_yaml` prints a model's defaults
with each field's description as a comment (``eocap config``, ``eocap train --print-config``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.core.errors import ConfigError

__all__ = [
    "ConfigSection",
    "documented_yaml",
    "load_yaml_model",
    "parse_set_options",
    "set_path",
    "validate_model",
]

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigSection(BaseModel):
    """Base of every config section: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def with_updates(self, updates: Mapping[str, Any]) -> Self:
        """A validated copy with dotted-path updates, e.g. ``{"stac.api_url": u}``.

        Raises:
            ConfigError: naming the first invalid field.
        """
        data = self.model_dump(mode="json")
        for path, value in updates.items():
            set_path(data, path.split("."), value)
        return validate_model(type(self), data)


def parse_set_options(items: Sequence[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` options as dotted-path updates (values parsed as YAML scalars).

    Raises:
        ConfigError: for an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(item, "--set takes FIELD=VALUE, e.g. --set output.shard_size=100")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k0][k1]...[kn] = value``, creating the mappings on the way."""
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _field_name(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "tuple[", "list[", "union[")) or part in (
            "str",
            "date",
        ):
            # pydantic adds validator/union branch names to locations; they are not fields.
            continue
        else:
            out += f".{part}" if out else part
    return out or "(root)"


def validate_model(model: type[ModelT], data: Mapping[str, Any]) -> ModelT:
    """``model`` validated from ``data``; a :class:`ConfigError` names the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(_field_name(tuple(err["loc"])), msg) from None


class _ConfigLoader(yaml.SafeLoader):
    """YAML loader that leaves dates as strings, so pydantic validates them and names the field."""


_ConfigLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _env_overrides(model: type[BaseModel], env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(prefix) or key == prefix:
            continue
        path = [p.lower() for p in key[len(prefix) :].split("__")]
        if path[0] not in model.model_fields:
            continue  # other variables with the prefix (e.g. EOCAP_DEMO_DIR) are not fields
        set_path(out, path, yaml.load(raw, Loader=_ConfigLoader))
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def load_yaml_model(
    model: type[ModelT], path: Path | str | None, env: Mapping[str, str], *, env_prefix: str
) -> ModelT:
    """Load ``model`` from YAML at ``path`` (``None``: the defaults), apply env overrides.

    Raises:
        ConfigError: for a missing or malformed file, or naming the first invalid field.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("(file)", f"config file {path} does not exist")
        try:
            loaded = yaml.load(path.read_text(), Loader=_ConfigLoader)
        except yaml.YAMLError as exc:
            raise ConfigError("(file)", f"{path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("(file)", f"{path} must hold a mapping at the top level")
        data = loaded or {}
    data = _merge(data, _env_overrides(model, env, env_prefix))
    return validate_model(model, data)


def documented_yaml(model: type[BaseModel], header: str) -> str:
    """``model``'s defaults as YAML, each field preceded by its description as a comment."""
    lines = [f"# {line}" for line in header.splitlines()]
    defaults = model().model_dump(mode="json")

    def emit(section: type[Any], data: dict[str, Any], indent: str) -> None:
        for name, info in section.model_fields.items():
            value = data[name]
            sub = info.annotation
            if info.description:
                lines.append(f"{indent}# {info.description}")
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                lines.append(f"{indent}{name}:")
                emit(sub, value, indent + "  ")
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                text = yaml.safe_dump({name: value}, default_flow_style=None, sort_keys=False)
                lines.extend(indent + ln for ln in text.rstrip().splitlines())
            else:
                text = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n")
                lines.append(f"{indent}{name}: {text.strip()}")

    emit(model, defaults, "")
    return "\n".join(lines) + "\n"
