"""Captioning: the captioner interface, the template captioner, prompts, checks and grounding.

Model backends live in :mod:`pipeline.caption.backends`. This package never imports
``pipeline.stages`` (nor the reverse): a caption is made from the plain types in
:mod:`pipeline.core.types`, whichever stage produced them.
"""
