"""`fcs validate`: what is wrong with a logger dataset or a store, where, and how to fix it."""

from fcs_data.validation.source import validate_source

__all__ = ["validate_source"]
