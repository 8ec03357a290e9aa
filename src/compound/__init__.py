"""Compound Compute: run Python scripts on other people's spare machines."""

__version__ = "0.1.0"
