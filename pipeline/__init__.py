"""eocap's pipeline library: one module per stage, plain typed functions the flows call.

Stages, in order: :mod:`~pipeline.sampling` (places x periods -> samples and shards),
:mod:`~pipeline.scenes` (STAC search), :mod:`~pipeline.chips` (COG windows),
:mod:`~pipeline.composite` (RGB PNG), :mod:`~pipeline.context` (Overture join),
:mod:`~pipeline.captioner` (captions), :mod:`~pipeline.shards` (Parquet writer);
:mod:`~pipeline.build` runs them on one shard.
"""

__version__ = "0.1.0"
