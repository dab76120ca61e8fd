"""Few-shot probes: scikit-learn models on image embeddings, at small label budgets.

What the probe measures (after Jungbluth, Allen et al., 2023, arXiv 2310.00119): how well a
classical model on frozen embeddings does with 10, 50, 100, 200, 500 and all labels, for
the paper's four tasks (:data:`TASKS`) or the labels of a user's file.

Protocol, per task and seed:

- **Spatial split.** Every sample falls in a block of a lon/lat grid (``block_deg`` degrees,
  from the sample's requested chip centre): samples of one location (all its periods) share a
  block, and no block has samples in both train and test. The blocks are dealt into folds by
  scikit-learn's ``StratifiedGroupKFold`` (balancing the classes over the folds where the
  blocks allow), and the seed picks the test fold (:func:`spatial_split`).
- **Budget draws** come from the train set only. A draw of ``n`` labels holds one random
  sample of each class of the train set, then ``n - classes`` more drawn uniformly, so every
  model sees every class (with fewer labels than classes the draw is uniform). A budget over
  the train set's size is capped to it and reported as capped.
- **Models**: logistic regression (standardised inputs), a random forest, k-nearest
  neighbours (:data:`MODELS`). A draw with a single class predicts that class.
- **Metrics**: accuracy and balanced accuracy on the whole test set
  (:mod:`trainer.metrics`), as mean and standard deviation over the seeds.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import shapely

from pipeline.dataset.loader import open_parquet, parquet_files
from trainer.metrics import balanced_accuracy, top1_accuracy
from trainer.plots import Curve

__all__ = [
    "BUDGETS",
    "MODELS",
    "TASKS",
    "BudgetScore",
    "LabelSet",
    "ProbeReport",
    "ProbeTask",
    "ReleaseSample",
    "budget_draw",
    "file_labels",
    "read_embeddings",
    "read_release_samples",
    "run_probe",
    "spatial_blocks",
    "spatial_split",
    "task_labels",
]

BUDGETS: tuple[int | None, ...] = (10, 50, 100, 200, 500, None)
"""Label budgets of the paper; ``None`` is every train sample."""


@dataclass(frozen=True)
class ProbeTask:
    """A binary task labelled from a chip's Overture context (the ``context`` column).

    A chip is positive when the largest of its summed shares (of the ``land_cover`` classes,
    of the ``land_use`` classes, of its water polygons, of its building footprints, as the
    task selects) reaches ``min_share``.

    Attributes:
        name: The task's name on the command line and in reports.
        question: What a positive answers, for the report.
        land_cover: Overture ``base/land_cover`` subtypes that count.
        land_use: Overture ``base/land_use`` classes that count.
        water: Whether the chip's Overture water polygons count. The context does not keep
            ``is_intermittent``, so intermittent water polygons count too.
        buildings: Whether the chip's building footprint share counts.
        min_share: Share of the chip from which it is positive.
    """

    name: str
    question: str
    land_cover: tuple[str, ...] = ()
    land_use: tuple[str, ...] = ()
    water: bool = False
    buildings: bool = False
    min_share: float = 0.5

    def share(self, context: Mapping[str, Any]) -> float:
        """The chip's share under this task's classes (the largest over the map layers)."""

        def summed(items: Iterable[Mapping[str, Any]], classes: tuple[str, ...]) -> float:
            return sum(float(i["share"]) for i in items if i["class"] in classes)

        shares = [
            summed(context.get("land_cover") or (), self.land_cover),
            summed(context.get("land_use") or (), self.land_use),
        ]
        if self.water:
            shares.append(sum(float(w["share"]) for w in context.get("water") or ()))
        if self.buildings:
            shares.append(float(context.get("building_share") or 0.0))
        return min(max(shares), 1.0)

    def label(self, context: Mapping[str, Any]) -> int:
        """1 where the chip is positive, else 0."""
        return int(self.share(context) >= self.min_share)


TASKS: dict[str, ProbeTask] = {
    task.name: task
    for task in (
        ProbeTask(
            "vegetation",
            "natural vegetation covers at least half the chip",
            land_cover=("forest", "shrub", "grass", "mangrove", "wetland", "moss"),
            land_use=("forest", "meadow", "grass"),
            min_share=0.5,
        ),
        ProbeTask(
            "built_up",
            "built-up surface covers at least a tenth of the chip",
            land_cover=("urban",),
            land_use=("residential", "commercial", "industrial", "retail"),
            buildings=True,
            min_share=0.1,
        ),
        ProbeTask(
            "cropland",
            "cropland covers at least half the chip",
            land_cover=("crop",),
            land_use=("farmland", "orchard", "vineyard"),
            min_share=0.5,
        ),
        ProbeTask(
            "water",
            "permanent water bodies cover at least 5 % of the chip",
            water=True,
            min_share=0.05,
        ),
    )
}
"""The four tasks of the paper, from the Overture context. Vegetation and cropland ask for
the chip's dominant cover; built-up surface and water, which are small in area, for their
presence."""


@dataclass(frozen=True)
class ReleaseSample:
    """What the probe reads of one ok sample of a release.

    Attributes:
        lon: Requested chip centre, longitude.
        lat: Requested chip centre, latitude.
        footprint: The chip footprint polygon in lon/lat (WKB), or None where not recorded.
        context: The Overture map context, or None where the run had none.
    """

    lon: float
    lat: float
    footprint: bytes | None
    context: dict[str, Any] | None


def read_release_samples(source: str, split: str | None = None) -> dict[str, ReleaseSample]:
    """Place and map context of every ok sample of ``source`` (a release split, or all)."""
    samples: dict[str, ReleaseSample] = {}
    columns = ["sample_id", "status", "lon", "lat", "geometry", "context"]
    for path in parquet_files(source, split):
        for row in open_parquet(path).read(columns=columns).to_pylist():
            if row["status"] == "ok":
                samples[row["sample_id"]] = ReleaseSample(
                    row["lon"], row["lat"], row["geometry"], row["context"]
                )
    return samples


def read_embeddings(path: Path) -> tuple[list[str], npt.NDArray[np.float32]]:
    """The sample ids and ``[N, D]`` vectors of an ``eocap embed`` Parquet file."""
    table = pq.read_table(path, columns=["sample_id", "vector"])
    vectors = table["vector"].combine_chunks()
    dim = vectors.type.list_size
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return table["sample_id"].to_pylist(), flat.reshape(-1, dim)


@dataclass(frozen=True)
class LabelSet:
    """One probe target: classes and the class index of each labelled sample.

    Attributes:
        name: The task's name, or the label file's.
        classes: Class names, in index order.
        labels: Sample id -> class index.
        origin: Where the labels come from, for the report.
        unlabelled: Samples of the release that got no label.
    """

    name: str
    classes: tuple[str, ...]
    labels: dict[str, int]
    origin: str
    unlabelled: int = 0


def task_labels(task: ProbeTask, samples: Mapping[str, ReleaseSample]) -> LabelSet:
    """Labels of ``task`` for every sample with a map context."""
    labels = {
        sid: task.label(sample.context)
        for sid, sample in samples.items()
        if sample.context is not None
    }
    return LabelSet(
        task.name,
        (f"not {task.name}", task.name),
        labels,
        f"Overture context: {task.question}",
        unlabelled=len(samples) - len(labels),
    )


def _points(path: Path, label_column: str) -> tuple[list[Any], npt.NDArray[Any]]:
    """Labels and shapely points (lon/lat) of a GeoJSON, GeoParquet or lon/lat Parquet file."""
    import geopandas

    if path.suffix.lower() == ".parquet":
        names = pq.read_schema(path).names
        if "geometry" not in names:
            missing = {"lon", "lat", label_column} - set(names)
            if missing:
                raise ValueError(
                    f"{path}: a label file without geometry needs lon, lat and {label_column} "
                    f"columns; missing {sorted(missing)}"
                )
            table = pq.read_table(path, columns=["lon", "lat", label_column])
            points = shapely.points(
                table["lon"].to_numpy(zero_copy_only=False),
                table["lat"].to_numpy(zero_copy_only=False),
            )
            return table[label_column].to_pylist(), points
        frame = geopandas.read_parquet(path)
    else:
        frame = geopandas.read_file(path)
    if label_column not in frame.columns:
        raise ValueError(f"{path} has no column {label_column!r} (columns: {list(frame.columns)})")
    if frame.crs is not None:
        frame = frame.to_crs(4326)
    if not all(frame.geometry.geom_type == "Point"):
        raise ValueError(f"{path}: every label must be a point")
    column = frame[label_column]
    # pandas reads a missing label as NaN (or NA): None, as the Arrow path gives it.
    labels = [None if missing else v for v, missing in zip(column, column.isna(), strict=True)]
    return labels, np.asarray(frame.geometry.array)


def file_labels(
    path: Path, samples: Mapping[str, ReleaseSample], *, label_column: str = "label"
) -> LabelSet:
    """Labels from a file of points: each point labels every sample whose chip contains it.

    A chip is its recorded footprint (every period of a location shares it); samples without
    a footprint get no label. A sample containing points of different labels is ambiguous
    and left out, and so are points without a label.

    Raises:
        ValueError: when the file cannot be read as labelled points.
    """
    raw, all_points = _points(path, label_column)
    labelled = [i for i, value in enumerate(raw) if value is not None]
    names = [str(raw[i]) for i in labelled]
    points = all_points[labelled]
    ids = [sid for sid, sample in samples.items() if sample.footprint is not None]
    footprints = shapely.from_wkb([samples[sid].footprint for sid in ids])
    tree = shapely.STRtree(footprints)
    point_index, chip_index = tree.query(points, predicate="within")
    found: dict[str, set[str]] = {}
    for p, c in zip(point_index.tolist(), chip_index.tolist(), strict=True):
        found.setdefault(ids[c], set()).add(names[p])
    classes = tuple(sorted(set(names)))
    index = {name: i for i, name in enumerate(classes)}
    labels = {sid: index[next(iter(n))] for sid, n in found.items() if len(n) == 1}
    return LabelSet(
        path.stem,
        classes,
        labels,
        f"{path.name}: {len(names)} points, {len(set(point_index.tolist()))} in a chip, "
        f"{len(found) - len(labels)} samples ambiguous",
        unlabelled=len(samples) - len(labels),
    )


def spatial_blocks(
    lon: npt.ArrayLike, lat: npt.ArrayLike, block_deg: float
) -> npt.NDArray[np.int64]:
    """The block of each sample: its cell of a ``block_deg`` lon/lat grid, as one integer."""
    col = np.floor(np.asarray(lon, dtype=np.float64) / block_deg).astype(np.int64)
    row = np.floor(np.asarray(lat, dtype=np.float64) / block_deg).astype(np.int64)
    # Cells are numbered row-major on a grid wide enough for the whole globe.
    return row * (math.ceil(360 / block_deg) + 1) + col


def spatial_split(
    blocks: npt.ArrayLike, labels: npt.ArrayLike, *, test_fraction: float, seed: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Train and test indices with no block in both: fold ``seed % k`` of a spatial k-fold.

    ``StratifiedGroupKFold`` deals the blocks into ``k = round(1 / test_fraction)`` folds.
    Its shuffle only breaks ties between blocks of equal class balance (scikit-learn
    PR #32540), so on real blocks every ``random_state`` tends to give the same folds: the
    seed therefore picks the test fold, and seeds ``0 .. k-1`` test on every block once (a
    spatial cross-validation); later seeds reshuffle (``random_state = seed // k``).

    Raises:
        ValueError: when there are fewer than two blocks.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.asarray(blocks)
    n_blocks = len(np.unique(groups))
    if n_blocks < 2:
        raise ValueError(f"the samples lie in {n_blocks} spatial block: lower the block size")
    folds = min(max(round(1 / test_fraction), 2), n_blocks)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed // folds)
    y = np.asarray(labels)
    with warnings.catch_warnings():
        # Rare classes with fewer samples than folds are expected here (a probe reports
        # its class counts); the split stays a valid group split.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(splitter.split(np.zeros(len(y)), y, groups))
    train, test = splits[seed % folds]
    return train, test


def budget_draw(
    labels: npt.NDArray[np.int64], budget: int, rng: np.random.Generator
) -> npt.NDArray[np.intp]:
    """``budget`` indices into ``labels``: one of each class first, the rest uniform."""
    n = len(labels)
    if budget >= n:
        return np.arange(n)
    classes = np.unique(labels)
    if budget < len(classes):
        return np.sort(rng.choice(n, size=budget, replace=False))
    first = np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes])
    rest = np.setdiff1d(np.arange(n), first)
    more = rng.choice(rest, size=budget - len(first), replace=False)
    return np.sort(np.concatenate([first, more]))


KNN_NEIGHBOURS = 5
"""k of the k-NN probe (fewer where the draw has fewer labels)."""


class _Classifier(Protocol):
    classes_: npt.NDArray[Any]

    def fit(self, x: Any, y: Any) -> Any: ...

    def predict_proba(self, x: Any) -> npt.NDArray[np.float64]: ...


def _logistic(seed: int, n: int) -> _Classifier:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline: _Classifier = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)
    )
    return pipeline


def _forest(seed: int, n: int) -> _Classifier:
    from sklearn.ensemble import RandomForestClassifier

    forest: _Classifier = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    return forest


def _knn(seed: int, n: int) -> _Classifier:
    from sklearn.neighbors import KNeighborsClassifier

    knn: _Classifier = KNeighborsClassifier(n_neighbors=min(KNN_NEIGHBOURS, n))
    return knn


MODELS: dict[str, Callable[[int, int], _Classifier]] = {
    "logistic": _logistic,
    "random_forest": _forest,
    "knn": _knn,
}
"""The probe models by name: a factory of (seed, number of training labels)."""


def _fit_scores(
    model: str,
    seed: int,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    test_x: npt.NDArray[np.float32],
    n_classes: int,
) -> npt.NDArray[np.float64]:
    """``[N_test, n_classes]`` class scores of ``model`` fitted on (x, y); unseen classes -1."""
    scores = np.full((len(test_x), n_classes), -1.0)
    seen = np.unique(y)
    if len(seen) == 1:
        scores[:, seen[0]] = 1.0
        return scores
    classifier = MODELS[model](seed, len(y))
    classifier.fit(x, y)
    scores[:, classifier.classes_] = classifier.predict_proba(test_x)
    return scores


@dataclass
class BudgetScore:
    """One model's scores at one label budget on one task, per seed.

    Attributes:
        task: The label set's name.
        model: The model's name (:data:`MODELS`).
        budget: Labels asked for; None for every train sample.
        labels: Labels used per seed (the budget, or the train set's size where smaller).
        accuracy: Test accuracy per seed.
        balanced_accuracy: Test balanced accuracy per seed.
    """

    task: str
    model: str
    budget: int | None
    labels: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    balanced_accuracy: list[float] = field(default_factory=list)

    @property
    def capped_seeds(self) -> int:
        """Seeds whose train set was smaller than the budget."""
        return sum(self.budget is not None and n < self.budget for n in self.labels)

    def summary(self) -> dict[str, Any]:
        """Mean and standard deviation over seeds, with the caps, for tables and JSON."""
        return {
            "task": self.task,
            "model": self.model,
            "budget": "all" if self.budget is None else self.budget,
            "labels_mean": float(np.mean(self.labels)),
            "capped_seeds": self.capped_seeds,
            "seeds": len(self.labels),
            "accuracy_mean": float(np.mean(self.accuracy)),
            "accuracy_std": float(np.std(self.accuracy)),
            "balanced_accuracy_mean": float(np.mean(self.balanced_accuracy)),
            "balanced_accuracy_std": float(np.std(self.balanced_accuracy)),
        }


@dataclass(frozen=True)
class TaskSummary:
    """What a probe knew of one label set: its classes, samples and splits.

    Attributes:
        name: The label set's name.
        origin: Where its labels come from.
        classes: Class names with their sample counts.
        samples: Labelled samples that have an embedding.
        blocks: Spatial blocks they fall in.
        train_sizes: Train samples per seed.
        test_sizes: Test samples per seed.
        unlabelled: Samples of the release its labels left out.
    """

    name: str
    origin: str
    classes: dict[str, int]
    samples: int
    blocks: int
    train_sizes: list[int]
    test_sizes: list[int]
    unlabelled: int


@dataclass
class ProbeReport:
    """Every score of a probe run, with its settings."""

    block_deg: float
    test_fraction: float
    seeds: list[int]
    tasks: list[TaskSummary] = field(default_factory=list)
    scores: list[BudgetScore] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The report as plain data (``probe.json``)."""
        return {
            "block_deg": self.block_deg,
            "test_fraction": self.test_fraction,
            "seeds": self.seeds,
            "tasks": [asdict(t) for t in self.tasks],
            "scores": [{**asdict(s), **s.summary()} for s in self.scores],
        }

    def markdown(self) -> str:
        """Tables of balanced accuracy and accuracy (mean ± std over seeds) per task."""
        lines = [
            "# Few-shot probes",
            "",
            f"Spatial blocks of {self.block_deg:g}°, test fraction {self.test_fraction:g}, "
            f"seeds {', '.join(map(str, self.seeds))}. Scores are mean ± std over seeds, in %; "
            "a budget over the train set is capped to it (marked *capped n/seeds*).",
        ]
        for task in self.tasks:
            counts = ", ".join(f"{c}: {n}" for c, n in task.classes.items())
            lines += [
                "",
                f"## {task.name}",
                "",
                f"{task.origin}. {task.samples} samples in {task.blocks} blocks ({counts}), "
                f"{task.unlabelled} without a label; "
                f"train {min(task.train_sizes)}-{max(task.train_sizes)}, "
                f"test {min(task.test_sizes)}-{max(task.test_sizes)} per seed.",
                "",
                "| model | labels | balanced accuracy | accuracy |",
                "|---|---|---|---|",
            ]
            for score in self.scores:
                if score.task != task.name:
                    continue
                s = score.summary()
                labels = str(s["budget"])
                if s["capped_seeds"]:
                    labels += f" (capped {s['capped_seeds']}/{s['seeds']}: {s['labels_mean']:.0f})"
                lines.append(
                    f"| {score.model} | {labels} "
                    f"| {100 * s['balanced_accuracy_mean']:.1f} ± "
                    f"{100 * s['balanced_accuracy_std']:.1f} "
                    f"| {100 * s['accuracy_mean']:.1f} ± {100 * s['accuracy_std']:.1f} |"
                )
        return "\n".join(lines) + "\n"

    def curves(self, metric: str = "balanced_accuracy") -> list[tuple[str, float, list[Curve]]]:
        """Per task: its name, chance level (1 / classes) and one curve of ``metric`` per model.

        A budget that every seed capped repeats the ``all`` point and is left out.
        """
        panels = []
        for task in self.tasks:
            curves = []
            for model in dict.fromkeys(s.model for s in self.scores if s.task == task.name):
                points = [
                    s.summary()
                    for s in self.scores
                    if s.task == task.name
                    and s.model == model
                    and (s.budget is None or s.capped_seeds < len(s.labels))
                ]
                points.sort(key=lambda p: float(p["labels_mean"]))
                curves.append(
                    Curve(
                        model,
                        [p["labels_mean"] for p in points],
                        [p[f"{metric}_mean"] for p in points],
                        [p[f"{metric}_std"] for p in points],
                    )
                )
            panels.append((task.name, 1 / len(task.classes), curves))
        return panels

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Write ``probe.json`` and ``probe.md`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / "probe.json", folder / "probe.md"
        json_path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        md_path.write_text(self.markdown())
        return json_path, md_path


def run_probe(
    ids: Sequence[str],
    vectors: npt.NDArray[np.float32],
    samples: Mapping[str, ReleaseSample],
    label_sets: Sequence[LabelSet],
    *,
    models: Sequence[str] = tuple(MODELS),
    budgets: Sequence[int | None] = BUDGETS,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    block_deg: float = 0.05,
    test_fraction: float = 0.3,
    on_fit: Callable[[int, int], None] | None = None,
) -> ProbeReport:
    """Probe the embeddings on every label set (see the module docstring).

    Args:
        ids: Sample id of each embedding.
        vectors: ``[N, D]`` embeddings.
        samples: The release's samples (their places).
        label_sets: What to predict.
        models: Names of :data:`MODELS` to fit.
        budgets: Label budgets; None means every train sample.
        seeds: One split and one draw per budget for each.
        block_deg: Size of the spatial blocks in degrees.
        test_fraction: Share of the blocks (about: of the samples) held out for test.
        on_fit: Called with (fits done, fits in all) after each fit.

    Raises:
        ValueError: when a label set has under two classes or its samples one block, or the
            settings are out of range.
    """
    if not seeds or not budgets or not models:
        raise ValueError("a probe needs at least one seed, one budget and one model")
    if not 0 < test_fraction < 1 or block_deg <= 0:
        raise ValueError(
            f"test fraction {test_fraction} must lie in (0, 1) and block size {block_deg} "
            "must be positive"
        )
    row = {sid: i for i, sid in enumerate(ids)}
    report = ProbeReport(block_deg, test_fraction, list(seeds))
    total = len(label_sets) * len(seeds) * len(budgets) * len(models)
    done = 0
    for label_set in label_sets:
        kept = [sid for sid in label_set.labels if sid in row and sid in samples]
        y = np.array([label_set.labels[sid] for sid in kept], dtype=np.int64)
        counts = Counter(y.tolist())
        if len(counts) < 2:
            raise ValueError(
                f"{label_set.name}: the embedded samples have {len(counts)} class "
                f"({dict(counts)}): a probe needs two"
            )
        x = vectors[[row[sid] for sid in kept]]
        blocks = spatial_blocks(
            [samples[sid].lon for sid in kept], [samples[sid].lat for sid in kept], block_deg
        )
        scores = {(m, b): BudgetScore(label_set.name, m, b) for m in models for b in budgets}
        train_sizes, test_sizes = [], []
        for seed in seeds:
            train, test = spatial_split(blocks, y, test_fraction=test_fraction, seed=seed)
            train_sizes.append(len(train))
            test_sizes.append(len(test))
            rng = np.random.default_rng(seed)
            for budget in budgets:
                draw = train[budget_draw(y[train], budget or len(train), rng)]
                for model in models:
                    logits = _fit_scores(
                        model, seed, x[draw], y[draw], x[test], len(label_set.classes)
                    )
                    score = scores[(model, budget)]
                    score.labels.append(len(draw))
                    score.accuracy.append(top1_accuracy(logits, y[test]))
                    score.balanced_accuracy.append(balanced_accuracy(logits, y[test]))
                    done += 1
                    if on_fit is not None:
                        on_fit(done, total)
        report.tasks.append(
            TaskSummary(
                label_set.name,
                label_set.origin,
                {label_set.classes[c]: n for c, n in sorted(counts.items())},
                len(kept),
                len(np.unique(blocks)),
                train_sizes,
                test_sizes,
                label_set.unlabelled,
            )
        )
        report.scores.extend(scores.values())
    return report
