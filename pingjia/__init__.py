"""pingjia: rating keypads for government service halls.

The source lives in the repository's top-level folders (firmware/, protocol/,
bridge/, tools/); pyproject.toml installs them under this one namespace.
"""
__version__ = "0.1.0"
