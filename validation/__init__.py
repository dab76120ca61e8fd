"""The review app: domain experts validate sampled captions of an eocap dataset.

Modules: :mod:`validation.db` (tables, SQLite or PostgreSQL), :mod:`validation.auth` (accounts,
sessions, CSRF, login throttling and lockout), :mod:`validation.dataset` (read samples and chips
from the shards),
:mod:`validation.campaigns` (stratified, seeded samples; overlap; gold items),
:mod:`validation.agreement` (Krippendorff's alpha, Cohen's kappa), :mod:`validation.results`
(dashboard figures, Parquet export, ``eocap review apply``), :mod:`validation.app` (the web app:
its routers in :mod:`validation.routes`, their shared dependencies in :mod:`validation.deps`).
"""
