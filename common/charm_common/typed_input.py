"""Typed config and action parameters: one message format for every bad value."""

from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic

Model = TypeVar("Model", bound=pydantic.BaseModel)


class InvalidInputError(ValueError):
    """A config option or action parameter has a value the charm cannot use.

    The message names the option (as the operator spells it) and what would be valid.
    """


def _describe(error: Any) -> str:
    names = [str(part).replace("_", "-") for part in error["loc"] if isinstance(part, str)]
    name = ".".join(names)
    if error["type"] == "extra_forbidden":
        return f"unknown option '{name}'"
    reason = error["msg"].removeprefix("Value error, ")
    return f"invalid '{name}': {reason}" if name else reason


def load_model(model: type[Model], data: Mapping[str, Any]) -> Model:
    """Validate ``data`` (config or action params, dash-separated keys) into ``model``.

    Args:
        model: the pydantic model; field names use underscores where the option uses dashes.
        data: the raw mapping, e.g. ``dict(self.config)`` or ``event.params``.

    Raises:
        InvalidInputError: naming every invalid option and what is valid.
    """
    normalised = {key.replace("-", "_"): value for key, value in data.items()}
    try:
        return model.model_validate(normalised)
    except pydantic.ValidationError as exc:
        raise InvalidInputError("; ".join(_describe(e) for e in exc.errors())) from None


def require_confirmation(confirm: bool, consequence: str) -> bool:
    """Validate an action's ``confirm`` parameter: it must be true for what can't be undone.

    Raises:
        ValueError: naming the consequence and how to confirm.
    """
    if not confirm:
        raise ValueError(f"{consequence}; run again with confirm=true")
    return confirm
