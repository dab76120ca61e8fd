"""The plain data types several layers share: a chip's statistics and what the map says about it.

They live here, not beside the code that computes them (``stages.chips`` reads COGs,
``stages.context`` queries DuckDB), so the captioners, the grounding check and the dataset
contract can use them without importing rasterio or DuckDB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.geo.grid import ChipGrid


@dataclass(frozen=True)
class ChipStats:
    """Per-chip fractions (0..1) from SCL and the pixels, and mean spectral indices.

    Indices are over valid, cloud-free pixels; ``None`` where no such pixel exists or the band
    set lacks the bands an index needs.
    """

    nodata_fraction: float
    cloud_fraction: float
    cloud_shadow_fraction: float
    snow_fraction: float
    water_fraction: float
    ndvi_mean: float | None
    ndwi_mean: float | None
    brightness_mean: float | None


@dataclass(frozen=True)
class ChipArea:
    """A chip to describe: its sample id and pixel grid."""

    sample_id: str
    grid: ChipGrid


@dataclass(frozen=True)
class ShareItem:
    """A class and the share of the chip it covers (0..1)."""

    cls: str
    share: float


@dataclass(frozen=True)
class NamedFeature:
    """A feature with a name, what it is and where it lies in the chip.

    Attributes:
        name: The feature's primary name.
        kind: Its class, e.g. ``lake``, ``primary`` (road), ``church``.
        theme: The Overture type it comes from (``water``, ``segment``, ``place``...).
        position: One of nine chip cells (``north-west`` ... ``centre`` ... ``south-east``),
            or ``throughout`` for features covering most of the chip.
        share: Area share of the chip (polygons), else 0.
        length_km: Length inside the chip (lines), else 0.
    """

    name: str
    kind: str
    theme: str
    position: str
    share: float = 0.0
    length_km: float = 0.0


@dataclass
class MapContext:
    """Everything the map says about one chip.

    Attributes:
        land_cover: Land-cover classes by share, largest first.
        land_use: Land-use classes by share, largest first.
        water: Water features in the chip (named or not), largest first.
        building_count: Buildings intersecting the chip.
        building_share: Share of the chip under building footprints.
        roads: Road length (km) per class, as ``ShareItem(cls, share=length_km)``.
        named_features: Named features with positions.
        classes: Distinct feature classes present (Llama3-MS-CLIP ``classes``).
        tags: OSM-style ``key=value`` tags of the features (Llama3-MS-CLIP ``tags``).
        names: Distinct feature names (Llama3-MS-CLIP ``names``).
    """

    land_cover: list[ShareItem] = field(default_factory=list)
    land_use: list[ShareItem] = field(default_factory=list)
    water: list[NamedFeature] = field(default_factory=list)
    building_count: int = 0
    building_share: float = 0.0
    roads: list[ShareItem] = field(default_factory=list)
    named_features: list[NamedFeature] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @classmethod
    def from_row(
        cls, row: dict[str, Any], classes: list[str], tags: list[str], names: list[str]
    ) -> MapContext:
        """Rebuild a context from its shard columns (the inverse of :meth:`to_row`)."""
        return cls(
            land_cover=[ShareItem(i["class"], i["share"]) for i in row["land_cover"]],
            land_use=[ShareItem(i["class"], i["share"]) for i in row["land_use"]],
            water=[NamedFeature(**f) for f in row["water"]],
            building_count=row["building_count"],
            building_share=row["building_share"],
            roads=[ShareItem(i["class"], i["length_km"]) for i in row["roads"]],
            named_features=[NamedFeature(**f) for f in row["named_features"]],
            classes=list(classes),
            tags=list(tags),
            names=list(names),
        )

    def to_row(self) -> dict[str, Any]:
        """A plain dict for the Parquet ``context`` struct (see docs/dataset-schema.md)."""
        row = asdict(self)
        row["land_cover"] = [{"class": i.cls, "share": i.share} for i in self.land_cover]
        row["land_use"] = [{"class": i.cls, "share": i.share} for i in self.land_use]
        row["roads"] = [{"class": i.cls, "length_km": i.share} for i in self.roads]
        for key in ("water", "named_features"):
            row[key] = [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "theme": f.theme,
                    "position": f.position,
                    "share": f.share,
                    "length_km": f.length_km,
                }
                for f in getattr(self, key)
            ]
        for key in ("classes", "tags", "names"):
            row.pop(key)
        return row
