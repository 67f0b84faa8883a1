"""Native walkers (Cython), built by ``pip install`` when a C compiler and the Python headers
are there: ``router/core/_speedups.pyx`` (field paths), ``destinations/_speedups.pyx`` (the
allowlist copy, the PII net's quick walk, the tokenize HMAC) and ``consent/_speedups.pyx``
(the subject hashes: SHA-256 and HMAC-SHA256 of ``native/``). Each is optional: when it
cannot be compiled, pip says so and the package runs its pure-Python code, which gives the
same answers (tests/unit/test_speedups.py, tests/unit/test_native_hashes.py). Everything
else is in pyproject.toml.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

DIRECTIVES = {"language_level": "3", "boundscheck": False, "wraparound": False}

extensions = cythonize(
    [
        Extension("router.core._speedups", ["router/core/_speedups.pyx"], optional=True),
        Extension(
            "destinations._speedups",
            ["destinations/_speedups.pyx"],
            include_dirs=["native"],
            depends=["native/sha256.h", "native/hmac.pxi"],
            optional=True,
        ),
        Extension(
            "consent._speedups",
            ["consent/_speedups.pyx"],
            include_dirs=["native"],
            depends=["native/sha256.h", "native/hmac.pxi"],
            optional=True,
        ),
    ],
    compiler_directives=DIRECTIVES,
    include_path=["native"],
)
for extension in extensions:  # cythonize copies the Extension: keep optional on the copy
    extension.optional = True

setup(ext_modules=extensions)
