# SHA-256 and HMAC-SHA256 of native/sha256.h for Python: included (not imported) by
# consent/_speedups.pyx and destinations/_speedups.pyx, which may not import each other.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from cpython.bytes cimport PyBytes_FromStringAndSize

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL
    object PyUnicode_DecodeASCII(const char *data, Py_ssize_t size, const char *errors)

cdef extern from "sha256.h":
    const uint32_t *RS_SHA256_IV
    int rs_sha256_select(int portable)
    void rs_sha256_finish(const uint32_t *start, uint64_t absorbed, const uint8_t *data,
                          size_t length, uint8_t *out)
    void rs_hmac_prepare(const uint8_t *key, size_t length, uint32_t *inner, uint32_t *outer)
    void rs_hmac(const uint32_t *inner, const uint32_t *outer, const uint8_t *data, size_t length,
                 uint8_t *out)

cdef const char *_HEX = b"0123456789abcdef"

cdef str _hex(const uint8_t *digest, Py_ssize_t size):
    cdef char text[64]
    cdef Py_ssize_t i
    for i in range(size):
        text[2 * i] = _HEX[digest[i] >> 4]
        text[2 * i + 1] = _HEX[digest[i] & 15]
    return PyUnicode_DecodeASCII(text, 2 * size, NULL)


def use_portable(bint portable):
    """Compress with the portable C code (``True``) or the CPU's SHA extensions when it has
    them (``False``, the default at import). Returns whether the SHA extensions are in use."""
    return bool(rs_sha256_select(portable))


def sha256_hex(str text):
    """``hashlib.sha256(text.encode()).hexdigest()``."""
    cdef Py_ssize_t length
    cdef const char *data = PyUnicode_AsUTF8AndSize(text, &length)
    cdef uint8_t digest[32]
    rs_sha256_finish(RS_SHA256_IV, 0, <const uint8_t *>data, length, digest)
    return _hex(digest, 32)


cdef class HmacSha256:
    """HMAC-SHA256 under one key, its pads hashed once: ``HmacSha256(key).digest(message)`` is
    ``hmac.digest(key, message, "sha256")``."""

    cdef uint32_t inner[8]
    cdef uint32_t outer[8]

    def __init__(self, bytes key):
        rs_hmac_prepare(<const uint8_t *>key, len(key), self.inner, self.outer)

    def digest(self, bytes message):
        cdef uint8_t out[32]
        rs_hmac(self.inner, self.outer, <const uint8_t *>message, len(message), out)
        return PyBytes_FromStringAndSize(<char *>out, 32)

    def hex(self, str text, Py_ssize_t size=32):
        """The hex of the first ``size`` bytes (at most 32) of the HMAC of ``text`` in UTF-8."""
        if not 0 <= size <= 32:
            raise ValueError("size must be between 0 and 32")
        cdef Py_ssize_t length
        cdef const char *data = PyUnicode_AsUTF8AndSize(text, &length)
        cdef uint8_t out[32]
        rs_hmac(self.inner, self.outer, <const uint8_t *>data, length, out)
        return _hex(out, size)


rs_sha256_select(0)
