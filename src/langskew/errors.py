"""The one error type for bad user input (config, data, names)."""


class LangskewError(ValueError):
    """Bad input: the message names the key, column, language or label at fault."""
