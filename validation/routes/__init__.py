"""The review app's routers, one module each, included by :func:`validation.app.create_app`.

:mod:`.auth` (login, logout), :mod:`.review` (the reviewer's pages and answers) and :mod:`.admin`
(accounts, campaigns, dashboards, export, audit trail). What they share (the user, the CSRF
check, the database and dataset) is in :mod:`validation.deps`.
"""
