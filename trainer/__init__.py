"""The bundled multispectral CLIP trainer: train, evaluate, embed and export over released shards.

It reads data only through the dataset contract (:mod:`pipeline.dataset`, chiefly
:class:`pipeline.dataset.loader.SampleDataset`) and :mod:`pipeline.core`; an import-linter
contract in ``make lint`` keeps it so. See docs/training.md.
"""
