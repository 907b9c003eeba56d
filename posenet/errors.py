"""Errors a user can act on. Scripts print them as one line, without a traceback."""


class PosenetError(Exception):
    """Base class for errors caused by the user's input (files, configs, checkpoints)."""


class ConfigError(PosenetError):
    """A config file or command-line override is invalid."""


class DataError(PosenetError):
    """A dataset, annotation file or image cannot be used."""
