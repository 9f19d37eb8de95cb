"""Importing this module registers every chapter's exercises."""
from . import ch03  # noqa: F401
