"""eocap's pipeline library: layered packages of plain, typed functions the flows call.

From the bottom (docs/architecture.md; ``make lint`` enforces the order):
:mod:`~pipeline.geo` (bands, grids, Z-order, radiometry), :mod:`~pipeline.core` (errors, config,
shared types), :mod:`~pipeline.io` (STAC, COGs, DuckDB, Overture releases, serving); then, beside
each other, :mod:`~pipeline.stages` (sampling -> scenes -> chips -> composite -> context),
:mod:`~pipeline.caption` (captioners, prompts, claims, checks) and :mod:`~pipeline.dataset` (the
dataset contract); on top :mod:`~pipeline.runner` (:func:`pipeline.runner.build.build_shard` runs
the stages on one shard) and :mod:`~pipeline.demo` (the offline demo region and servers).
"""

__version__ = "0.1.0"
