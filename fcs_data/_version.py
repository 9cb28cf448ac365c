"""The installed fcs version: one leaf module that the CLI, the converters and the planning server share."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fcs")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
