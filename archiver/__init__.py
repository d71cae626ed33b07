"""Archive Baseten training-job checkpoint metadata into SQL."""

__version__ = "0.1.0"
