"""Running a build without Prefect: one shard, the caption stage, planning, reports, progress.

Flows and the CLI call these functions once per shard; they never import Prefect.
"""
