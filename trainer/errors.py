"""Errors of the locked apparatus: each is one line naming what is wrong (the CLI exits 2)."""
from __future__ import annotations


class TrainerError(Exception):
    """Bad apparatus input (data, paths, options). Never raised for what a train.py does."""


class DataMissing(TrainerError):
    """The data dir, a source folder or the prepared files are not there."""


class CorruptData(TrainerError):
    """A shard or prepared file exists but cannot be read."""


class DownloadError(TrainerError):
    """A shard could not be fetched from the hub after all retries."""


class BadTrainPy(TrainerError):
    """The train.py path does not exist or does not compile (manual runs only)."""


class BadOption(TrainerError):
    """An option value is out of range or unknown (profile, source, budget...)."""
