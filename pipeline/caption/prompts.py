"""Versioned prompt templates (``prompts/*.yaml`` with Jinja2) and their rendering to chats.

A prompt file holds a ``system`` text, fixed ``instructions`` that precede the image, and a
Jinja2 ``context`` rendered from the chip's map facts that follows it: the fixed part is the
same for every chip, so a server with prefix caching (vLLM) computes it once. ``kind: single``
asks for the caption directly; ``kind: multi_turn`` (the Llama3-MS-CLIP structure) asks the
``questions`` one turn at a time and then ``merge``s the answers into the caption.

Every sample records ``prompt_version`` = ``<name>-v<version>+<sha256 of the file and its
includes>``, so a changed template can never pass for an old one.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import yaml

from pipeline.caption.claims import CLASS_PHRASES
from pipeline.caption.interface import CaptionInput
from pipeline.core.errors import ConfigError

__all__ = ["PROMPTS_DIR", "ChatMessage", "PromptTemplate", "load_prompt", "prompt_facts"]

PROMPTS_DIR = Path(str(importlib.resources.files("prompts")))
"""The prompt folder: ``prompts/`` of the checkout, or the installed ``prompts`` package."""

ChatMessage = dict[str, Any]

_LAND_COVER_WORDS = CLASS_PHRASES["land_cover"]
"""The facts name land cover in the words the template captioner and the grounding check use."""


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded prompt.

    Attributes:
        name: Prompt name, e.g. ``grounded``.
        version: Integer version from the file.
        kind: ``single`` or ``multi_turn``.
        system: System message.
        instructions: Fixed user text before the image.
        context: Jinja2 template of the per-chip text after the image.
        questions: Questions asked one per turn (multi-turn only).
        merge: Final instruction that asks for the caption (multi-turn only).
        digest: sha256 of the file and the templates it includes.
    """

    name: str
    version: int
    kind: Literal["single", "multi_turn"]
    system: str
    instructions: str
    context: jinja2.Template
    questions: tuple[str, ...]
    merge: str
    digest: str

    @property
    def prompt_version(self) -> str:
        """``name-vN+hash`` recorded on every sample."""
        return f"{self.name}-v{self.version}+{self.digest[:12]}"

    def first_turn(self, facts: dict[str, Any], image: ChatMessage) -> list[ChatMessage]:
        """System message and the first user turn: instructions, image, facts (and question 1).

        Args:
            facts: Output of :func:`prompt_facts`.
            image: The image content part, e.g. ``{"type": "image_url", "image_url": {...}}``.
        """
        text = self.context.render(**facts).strip()
        if self.kind == "multi_turn":
            text += "\n\n" + self.questions[0]
        return [
            {"role": "system", "content": self.system},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": self.instructions},
                    image,
                    {"type": "text", "text": text},
                ],
            },
        ]

    def follow_ups(self) -> list[str]:
        """User turns after the first: the remaining questions, then the merge instruction."""
        if self.kind == "single":
            return []
        return [*self.questions[1:], self.merge]


def load_prompt(name_or_path: str | Path) -> PromptTemplate:
    """Load a prompt by name (``grounded-v1`` in ``prompts/``) or by path to a YAML file.

    Raises:
        ConfigError: naming ``captioner.prompt`` when the file is missing or malformed.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))
        raise ConfigError("captioner.prompt", f"no prompt {name_or_path!r}; known: {known}")
    raw = path.read_bytes()
    try:
        spec = yaml.safe_load(raw)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(path.parent),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
        )
        context_src = str(spec["context"])
        digest = hashlib.sha256(raw)
        includes = jinja2.meta.find_referenced_templates(env.parse(context_src))
        for include in sorted({str(i) for i in includes if i is not None}):
            digest.update((path.parent / include).read_bytes())
        kind = spec.get("kind", "single")
        questions = tuple(str(q) for q in spec.get("questions", []))
        if kind not in ("single", "multi_turn") or (kind == "multi_turn" and not questions):
            raise ValueError("kind must be single, or multi_turn with questions")
        return PromptTemplate(
            name=str(spec["name"]),
            version=int(spec["version"]),
            kind=kind,
            system=str(spec["system"]).strip(),
            instructions=str(spec["instructions"]).strip(),
            context=env.from_string(context_src),
            questions=questions,
            merge=str(spec.get("merge", "")).strip(),
            digest=digest.hexdigest(),
        )
    except (KeyError, ValueError, TypeError, yaml.YAMLError, jinja2.TemplateError) as exc:
        raise ConfigError("captioner.prompt", f"prompt {path} is malformed: {exc}") from None


def _pct(share: float) -> int:
    return max(1, round(100 * share)) if share > 0 else 0


def prompt_facts(x: CaptionInput) -> dict[str, Any]:
    """The template variables of one chip."""
    ctx, stats = x.context, x.stats
    water = [
        {
            "label": f"{w.kind} {w.name}".strip() if w.name else w.kind,
            "position": w.position,
            "percent": _pct(w.share),
        }
        for w in ctx.water[:4]
    ]
    roads = [{"name": r.cls, "km": round(r.share, 1)} for r in ctx.roads[:4]]
    places = [
        {"label": f"{f.name} ({f.kind})", "position": f.position}
        for f in ctx.named_features
        if f.theme in ("place", "land", "land_use")
    ][:6]
    return {
        "season": x.period,
        "date": x.datetime.date().isoformat(),
        "land_cover": [
            {"name": _LAND_COVER_WORDS.get(i.cls, i.cls), "percent": _pct(i.share)}
            for i in ctx.land_cover
        ],
        "land_use": [{"name": i.cls, "percent": _pct(i.share)} for i in ctx.land_use[:4]],
        "water": water,
        "buildings": ctx.building_count,
        "roads": roads,
        "places": places,
        "cloud_percent": round(100 * stats.cloud_fraction),
        "snow_percent": round(100 * stats.snow_fraction),
        "tags": ctx.tags[:20],
    }
