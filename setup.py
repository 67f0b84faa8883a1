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


def native(module: str) -> Extension:
    """The optional extension of ``module`` from its ``.pyx``, which may include the shared C
    of ``native/`` (``hmac.pxi``, ``sha256.h``)."""
    return Extension(
        module,
        [module.replace(".", "/") + ".pyx"],
        include_dirs=["native"],
        depends=["native/sha256.h", "native/hmac.pxi"],
        optional=True,
    )


extensions = cythonize(
    [
        native("router.core._speedups"),
        native("destinations._speedups"),
        native("consent._speedups"),
    ],
    compiler_directives=DIRECTIVES,
    include_path=["native"],
)
for extension in extensions:  # cythonize copies the Extension: keep optional on the copy
    extension.optional = True

setup(ext_modules=extensions)
