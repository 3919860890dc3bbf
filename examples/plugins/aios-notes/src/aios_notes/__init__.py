"""aios-notes: an example third-party AIOS plugin contributing tools (see ``plugin.py`` for the hook)."""

from aios_notes.notebook import Notebook
from aios_notes.tools import make_tools

__all__ = ["Notebook", "make_tools"]
__version__ = "0.1.0"
