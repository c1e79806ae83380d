"""Errors of the training job that the command line reports as one line (exit code 2)."""


class DataError(ValueError):
    """The requested data cannot be used: missing files, malformed IDX, no source to fetch from."""
