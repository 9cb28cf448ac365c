"""The `fcs` command line: thin wiring over `fcs_data` and `fcs_train`."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fcs")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
