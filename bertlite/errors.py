"""Errors that mean "the input is wrong": the CLI prints them as one line, without a traceback."""


class BertliteError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(BertliteError):
    """An invalid configuration value or combination."""


class DataError(BertliteError):
    """A missing, unreadable, empty or malformed data file."""


class CheckpointError(BertliteError):
    """A checkpoint that cannot be loaded for the requested use."""
