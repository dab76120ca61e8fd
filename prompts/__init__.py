"""eocap's versioned prompt templates (YAML + Jinja2), a package so that wheels ship them.

Read through :mod:`pipeline.caption.prompts`; nothing here is code.
"""
