"""eocap's pipeline library: one module per stage, plain typed functions the flows call.

Stages, in order: :mod:`~pipeline.stages.sampling` (places x periods -> samples and shards),
:mod:`~pipeline.stages.scenes` (STAC search), :mod:`~pipeline.stages.chips` (COG windows),
:mod:`~pipeline.stages.composite` (RGB PNG), :mod:`~pipeline.stages.context` (Overture join),
:mod:`~pipeline.caption.template` (captions), :mod:`~pipeline.dataset.writer` (Parquet writer);
:mod:`~pipeline.runner.build` runs them on one shard.
"""

__version__ = "0.1.0"
