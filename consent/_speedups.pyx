# cython: language_level=3, boundscheck=False, wraparound=False
# The native SHA-256 and HMAC-SHA256 of consent/ids.py (native/sha256.h, native/hmac.pxi).
include "hmac.pxi"
