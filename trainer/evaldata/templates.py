"""The Llama3-MS-CLIP zero-shot prompts: 50 templates and each benchmark's class names.

Taken from IBM's evaluation code (github.com/IBM/MS-CLIP, commit 9dbeb33:
``msclip/inference/classname_and_prompt/MSCLIP.py`` for the templates, and
``msclip/inference/benchmark_tool.py`` + ``classname_and_prompt/RSMETERML.py`` for the class
names), so that zero-shot numbers compare with the paper's. A class's text embedding is the
mean of its 50 prompt embeddings (:func:`prompts` makes them).

Each ``*_PROMPT_NAMES`` maps the label as written on disk (folder name, nomenclature name,
GeoJSON ``Type``) to the name put in the prompt; its order is the label order. IBM derives
EuroSAT's prompt names from the folder names by lower-casing them, which glues the words
(``AnnualCrop`` -> ``annualcrop``): that is what their published code prompts, kept here on
purpose (docs/evaluation-datasets.md, "Known traps").
"""

from __future__ import annotations

__all__ = [
    "BIGEARTHNET_PROMPT_NAMES",
    "EUROSAT_PROMPT_NAMES",
    "METERML_PROMPT_NAMES",
    "TEMPLATES",
    "prompts",
]

TEMPLATES: tuple[str, ...] = (
    "a satellite image showing {c}.",
    "a satellite image showing a {c}.",
    "a satellite image showing the {c}.",
    "The image is a satellite view showing {c}.",
    "The image is a satellite view showing a {c}.",
    "The image is a satellite view showing the {c}.",
    "The image shows {c}",
    "a satellite image of {c}.",
    "a satellite image of a {c}.",
    "a satellite image of the {c}.",
    "the satellite image of {c}.",
    "the satellite image of a {c}.",
    "the satellite image of the {c}.",
    "a satellite view of {c}.",
    "a satellite view of a {c}.",
    "a satellite view of the {c}.",
    "a low resolution satellite image of the {c}.",
    "a low resolution satellite image of a {c}.",
    "a bad satellite image of the {c}.",
    "a bad satellite image of a {c}.",
    "a cropped satellite image of the {c}.",
    "a cropped satellite image of a {c}.",
    "a bright satellite image of the {c}.",
    "a bright satellite image of a {c}.",
    "a cropped aerial image of the {c}.",
    "a cropped aerial image of a {c}.",
    "a bright aerial image of the {c}.",
    "a bright aerial image of a {c}.",
    "a dark aerial image of the {c}.",
    "a dark aerial image of a {c}.",
    "a close-up aerial image of the {c}.",
    "a close-up aerial image of a {c}.",
    "a black and white aerial image of the {c}.",
    "a black and white aerial image of a {c}.",
    "a jpeg corrupted aerial image of the {c}.",
    "a jpeg corrupted aerial image of a {c}.",
    "a blurry aerial image of the {c}.",
    "a blurry aerial image of a {c}.",
    "a good aerial image of the {c}.",
    "a good aerial image of a {c}.",
    "an aerial image of the large {c}.",
    "an aerial image of a large {c}.",
    "an aerial image of the nice {c}.",
    "an aerial image of a nice {c}.",
    "an aerial image of the small {c}.",
    "an aerial image of a small {c}.",
    "an aerial image of the weird {c}.",
    "an aerial image of a weird {c}.",
    "an aerial image of the cool {c}.",
    "an aerial image of a cool {c}.",
)
"""The 50 zero-shot templates, verbatim (one lacks its full stop, as in the source); ``{c}``
is the class name: ``template.format(c=name)``."""

EUROSAT_PROMPT_NAMES: dict[str, str] = {
    "AnnualCrop": "annualcrop",
    "Forest": "forest",
    "HerbaceousVegetation": "herbaceousvegetation",
    "Highway": "highway",
    "Industrial": "industrial",
    "Pasture": "pasture",
    "PermanentCrop": "permanentcrop",
    "Residential": "residential",
    "River": "river",
    "SeaLake": "sealake",
}
"""EuroSAT-MS class folder -> prompt name (IBM: ImageFolder's sorted folders, ``_`` and ``/``
replaced by spaces, lower-cased)."""

BIGEARTHNET_PROMPT_NAMES: dict[str, str] = {
    name: name
    for name in (
        "Urban fabric",
        "Industrial or commercial units",
        "Arable land",
        "Permanent crops",
        "Pastures",
        "Complex cultivation patterns",
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
        "Agro-forestry areas",
        "Broad-leaved forest",
        "Coniferous forest",
        "Mixed forest",
        "Natural grassland and sparsely vegetated areas",
        "Moors, heathland and sclerophyllous vegetation",
        "Transitional woodland, shrub",
        "Beaches, dunes, sands",
        "Inland wetlands",
        "Coastal wetlands",
        "Inland waters",
        "Marine waters",
    )
}
"""BigEarthNet 19-class nomenclature name -> prompt name: IBM prompts the names verbatim
(BigEarthNet is the one benchmark their code does not lower-case)."""

METERML_PROMPT_NAMES: dict[str, str] = {
    "CAFOs": "concentrated animal feeding operations",
    "Landfills": "landfills",
    "Mines": "coal mines",
    "Negative": "other features",
    "ProcessingPlants": "natural gas processing plants",
    "RefineriesAndTerminals": "oil refineries and petroleum terminals",
    "WWTreatment": "wastewater treatment plants",
}
"""METER-ML GeoJSON ``Type`` -> prompt name (IBM's ``RSMETERML.classes``, whose order is the
sorted order of these ``Type`` names)."""


def prompts(class_name: str) -> tuple[str, ...]:
    """Return the 50 prompts for one class name, in :data:`TEMPLATES` order."""
    return tuple(template.format(c=class_name) for template in TEMPLATES)
