"""Native walkers (Cython), built by ``pip install`` when a C compiler and the Python headers
are there: ``router/core/_speedups.pyx`` (field paths) and ``destinations/_speedups.pyx`` (the
allowlist copy and the PII net's quick walk). Each is optional: when it cannot be compiled,
pip says so and the package runs its pure-Python walkers, which give the same answers
(tests/unit/test_speedups.py). Everything else is in pyproject.toml.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

DIRECTIVES = {"language_level": "3", "boundscheck": False, "wraparound": False}

extensions = cythonize(
    [
        Extension("router.core._speedups", ["router/core/_speedups.pyx"], optional=True),
        Extension("destinations._speedups", ["destinations/_speedups.pyx"], optional=True),
    ],
    compiler_directives=DIRECTIVES,
)
for extension in extensions:  # cythonize copies the Extension: keep optional on the copy
    extension.optional = True

setup(ext_modules=extensions)
