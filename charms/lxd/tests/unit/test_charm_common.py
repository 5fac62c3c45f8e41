"""Unit tests of the shared ``charm_common`` package (retry and typed input)."""

from __future__ import annotations

import time

import pydantic
import pytest

from charm_common.retry import retry_transient
from charm_common.typed_input import InvalidInputError, load_model


class TransientError(Exception):
    pass


class Flaky:
    """Raises ``errors`` in turn, then returns ``result``."""

    def __init__(self, *errors: BaseException, result: object = "ok"):
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def test_retry_until_success():
    # GIVEN a call that fails transiently twice
    func = Flaky(TransientError("starting"), TransientError("busy"), result=42)

    # WHEN / THEN its result comes back after three calls
    assert retry_transient(func, retry_on=(TransientError,), timeout=5, interval=0) == 42
    assert func.calls == 3


def test_retry_gives_up_with_the_last_error():
    # GIVEN a call that always fails transiently
    calls = []

    def func():
        calls.append(time.monotonic())
        raise TransientError(f"attempt {len(calls)}")

    # WHEN / THEN the last error is re-raised once the timeout passed
    start = time.monotonic()
    with pytest.raises(TransientError) as exc_info:
        retry_transient(func, retry_on=(TransientError,), timeout=0.2, interval=0.05)
    assert time.monotonic() - start >= 0.2
    assert len(calls) >= 2
    assert str(exc_info.value) == f"attempt {len(calls)}"


def test_other_errors_are_raised_at_once():
    func = Flaky(KeyError("bug"), result=1)

    with pytest.raises(KeyError):
        retry_transient(func, retry_on=(TransientError,), timeout=5, interval=0)
    assert func.calls == 1


def test_retry_on_several_types():
    func = Flaky(TransientError("a"), ConnectionError("b"), result="up")

    assert retry_transient(func, retry_on=(TransientError, ConnectionError), interval=0) == "up"
    assert func.calls == 3


class Nested(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    pool_name: str


class Outer(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    storage_pools: list[Nested] = []
    max_size: int = 0


def test_load_model_dashes_become_underscores():
    assert load_model(Outer, {"max-size": 3}).max_size == 3


def test_load_model_names_nested_options_with_dashes_and_skips_indexes():
    with pytest.raises(InvalidInputError) as exc_info:
        load_model(Outer, {"storage-pools": [{"pool_name": 1}]})
    assert (
        str(exc_info.value) == "invalid 'storage-pools.pool-name': Input should be a valid string"
    )
