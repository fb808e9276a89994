"""The version of smolmesh (kept in step with pyproject.toml), for the layers below the API."""

__version__ = "0.1.0"
