"""The failures distillscape explains in one line. A leaf module: every layer may raise these, and it
imports nothing of the package, so no import cycle runs through an error class."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the allowed values."""


class ArtifactError(RuntimeError):
    """A missing or unreadable artifact; the message says which file and what to do."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset whose files are not where the config points; the message says where to put them."""


class DatasetCorruptError(ValueError):
    """Dataset files that are there but truncated or not in their format; the message names the file."""


# Failures the console scripts print as one line (exit 2); anything else is a bug and keeps its traceback.
KNOWN_ERRORS = (ConfigError, DatasetNotFoundError, DatasetCorruptError, ArtifactError, FloatingPointError)
