"""Declares kemu's one compiled extension; all metadata lives in pyproject.toml.

Without a working compiler the extension is optional and kemu runs on its
pure-Python reference (``kemu --version`` says which backend is active).
"""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = cythonize(
    [
        Extension(
            "kemu._fastpath",
            ["kemu/_fastpath.pyx"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O3"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
    ],
    compiler_directives={
        "language_level": "3",
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": False,
    },
)
for ext in extensions:  # cythonize() drops optional=True; set it again
    ext.optional = True

setup(ext_modules=extensions)
