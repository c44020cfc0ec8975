"""kemu's version, in a module of its own.

Any layer can name the version from here without importing the ``kemu`` package itself,
whose ``__init__`` is the public facade (it re-exports the Python API of
``kemu.frontend.api``); pyproject.toml's ``[project] version`` says the same.
"""

__version__ = "0.1.0"
