"""Fault injection for recovery tests: die abruptly at a named step of a rollout.

With ``FP_DEPLOYER_CRASH_AT=submitted`` (or ``switched``, or an event type such as
``DeploymentReady``) the deployer's composition root arms that step, and the worker exits at
once, like a kill -9, right after it — so tests can prove that a restarted worker finishes
every rollout from the log alone.
"""

from __future__ import annotations

import os
from collections.abc import Set

CRASH_EXIT_CODE = 86

_armed_steps: set[str] = set()


def arm_crashes(steps: Set[str]) -> None:
    """Make :func:`crash_point` exit the process at each of ``steps`` (none: never)."""
    _armed_steps.clear()
    _armed_steps.update(steps)


def crash_point(step: str) -> None:
    if step in _armed_steps:
        os._exit(CRASH_EXIT_CODE)
