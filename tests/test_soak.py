"""Soak: the fault models of test_stateful and test_locks with many more examples.

Marked ``slow`` (a few minutes): CI runs them with everything else; deselect
locally with ``-m 'not slow'``. The models are the same classes, so a rule or
invariant added there is soaked here too; only the number of examples differs.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.test_locks import LockModel
from tests.test_stateful import FaultModel, FaultModelTwoBackups

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


class FaultSoak(FaultModel):
    """Map operations, kills and joins on 3-5 members, one backup."""


class TwoBackupsSoak(FaultModelTwoBackups):
    """The same with two backups (two members may die at once)."""


class LockSoak(LockModel):
    """Locks held, released and orphaned by kills."""


FaultSoak.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TwoBackupsSoak.TestCase.settings = settings(max_examples=20, stateful_step_count=25, deadline=None)
LockSoak.TestCase.settings = settings(max_examples=20, stateful_step_count=30, deadline=None)
TestFaultSoak = FaultSoak.TestCase
TestTwoBackupsSoak = TwoBackupsSoak.TestCase
TestLockSoak = LockSoak.TestCase
