"""Front ends: the ``kemu`` command line (``cli``) and its renderers (``show``)."""
