"""Shared by every test tier under tests/: ordered steps on shared state."""

from __future__ import annotations

from collections.abc import Generator

import pytest

# -- ordered steps: once one fails, the later ones (which build on it) are skipped --------


_FAILED_STEP = pytest.StashKey[str]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    steps = item.parent
    if (
        report.failed
        and report.when == "call"
        and steps
        and item.get_closest_marker("ordered_steps")
    ):
        steps.stash.setdefault(_FAILED_STEP, item.name)
    return report


def pytest_runtest_setup(item: pytest.Item) -> None:
    steps = item.parent
    if steps and item.get_closest_marker("ordered_steps") and _FAILED_STEP in steps.stash:
        pytest.skip(f"builds on {steps.stash[_FAILED_STEP]}, which failed")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ordered_steps: the module's tests are consecutive steps on shared state"
    )
