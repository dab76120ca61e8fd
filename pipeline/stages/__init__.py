"""Pipeline stages: sampling, scenes, chips, composite, context. Independent of caption/."""
