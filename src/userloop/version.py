"""The package version, importable from every layer (``userloop/__init__.py`` is the top façade), and the
versions of what a run depends on (:func:`package_versions`, for run records)."""

from __future__ import annotations

__version__ = "0.1.0"

# Libraries whose version changes what a model generates (recorded when installed; never imported here).
RECORDED_PACKAGES = ("torch", "transformers")


def package_versions() -> dict[str, str | None]:
    """userloop's, Python's and each of :data:`RECORDED_PACKAGES`' version (None: not installed), read from the
    installed packages' metadata, so torch is not imported."""
    import platform  # here, not at the top: every command imports this module, few record versions
    from importlib import metadata

    versions: dict[str, str | None] = {"userloop": __version__, "python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
