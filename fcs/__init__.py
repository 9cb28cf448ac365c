"""The `fcs` command line: thin wiring over `fcs_data` and `fcs_train`."""

from fcs_data._version import __version__

__all__ = ["__version__"]
