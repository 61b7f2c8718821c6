"""The one error type for bad user input (config, data, names), and the checks all stages share."""

from typing import Any, Mapping


class LangskewError(ValueError):
    """Bad input: the message names the key, column, language or label at fault."""


def require_positive(where: str, values: Mapping[str, Any]) -> None:
    """Every named value is a number > 0, else a LangskewError naming ``where`` and the key."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise LangskewError(f"{where}: {key} must be positive, got {value!r}")
