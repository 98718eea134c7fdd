"""The package version, importable from every layer (``userloop/__init__.py`` is the top façade)."""

__version__ = "0.1.0"
