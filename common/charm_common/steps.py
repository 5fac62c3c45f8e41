"""How a reconcile step says it cannot go on now: a status that explains why."""

from __future__ import annotations

import ops


class StepStopped(Exception):  # noqa: N818 - a control-flow signal carrying a status
    """A reconcile step cannot go on now; carries the status that says why."""

    def __init__(self, status: ops.StatusBase):
        super().__init__(status.message)
        self.status = status


def waiting(message: str) -> StepStopped:
    """The step waits for something that will happen by itself."""
    return StepStopped(ops.WaitingStatus(message))


def blocked(message: str) -> StepStopped:
    """The step needs an operator to act."""
    return StepStopped(ops.BlockedStatus(message))
