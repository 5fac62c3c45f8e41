"""Retries for transient daemon errors (a daemon still starting, a busy database)."""

from collections.abc import Callable
from typing import TypeVar

import tenacity

Result = TypeVar("Result")


def retry_transient(
    func: Callable[[], Result],
    *,
    retry_on: tuple[type[BaseException], ...],
    timeout: float = 30.0,
    interval: float = 0.5,
) -> Result:
    """Call ``func`` until it stops raising one of ``retry_on`` or ``timeout`` seconds pass.

    The last exception is re-raised when time runs out; any other exception is raised at once.
    """
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(retry_on),
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(interval),
        reraise=True,
    )
    return retrying(func)
