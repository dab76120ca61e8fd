"""Prefect flows and the ``eocap`` CLI; thin wrappers around :mod:`pipeline`."""
