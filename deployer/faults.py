"""Fault injection for recovery tests: die abruptly at a named step of a rollout.

``FP_DEPLOYER_CRASH_AT=submitted`` (or ``switched``, or an event type such as
``DeploymentReady``) makes the worker exit at once, like a kill -9, right after that step —
so tests can prove that a restarted worker finishes every rollout from the log alone.
"""

from __future__ import annotations

import os

CRASH_AT_ENV = "FP_DEPLOYER_CRASH_AT"
CRASH_EXIT_CODE = 86


def crash_point(step: str) -> None:
    if step in os.environ.get(CRASH_AT_ENV, "").split(","):
        os._exit(CRASH_EXIT_CODE)
