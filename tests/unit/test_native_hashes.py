"""The native SHA-256 and HMAC-SHA256 (native/sha256.h through native/hmac.pxi, in
``consent._speedups`` and ``destinations._speedups``) are hashlib's and hmac's, with the CPU's
SHA extensions and with the portable C compression alike, on messages across every block
boundary and keys shorter and longer than a block; ``consent.ids.PureHmac`` (the fallback)
gives the same answers through the same interface.

Skipped when the extensions are not built, unless ``ROUTER_REQUIRE_NATIVE=1`` (CI).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from consent import ids
from destinations import fields

MODULES = [m for m in (ids._native, fields._native) if m is not None]

if os.environ.get("ROUTER_REQUIRE_NATIVE") == "1":
    assert ids._native is not None, "consent._speedups is not built (pip install -e .)"
    assert fields._native is not None, "destinations._speedups is not built"
pytestmark = pytest.mark.skipif(not MODULES, reason="native hashes not built")

texts = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=150),
    st.integers(0, 200).map(lambda n: "x" * n),  # every padding case: 55, 56, 63, 64, 119, 120
    st.integers(0, 70).map(lambda n: "é" * n),  # two UTF-8 bytes per character
)
keys = st.one_of(st.binary(max_size=130), st.sampled_from([b"", b"k" * 64, b"k" * 65]))


@contextmanager
def compression(portable: bool) -> Iterator[None]:
    """Compress with the portable C code or the CPU's SHA extensions (where the CPU has them;
    otherwise both are the portable code)."""
    for module in MODULES:
        module.use_portable(portable)
    try:
        yield
    finally:
        for module in MODULES:
            module.use_portable(False)


PORTABLE = pytest.mark.parametrize("portable", [False, True], ids=["sha-extensions", "portable"])


@PORTABLE
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
@given(key=keys, message=st.binary(max_size=200))
@example(key=b"key", message=b"The quick brown fox jumps over the lazy dog")
def test_hmac_digest_is_hmac(
    portable: bool, module: ModuleType, key: bytes, message: bytes
) -> None:
    with compression(portable):
        assert module.HmacSha256(key).digest(message) == hmac.digest(key, message, "sha256")


@PORTABLE
def test_the_rfc_4231_vector(portable: bool) -> None:
    """RFC 4231 test case 2, written out (not computed by what is under test)."""
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 B.1
    with compression(portable):
        for module in MODULES:
            hasher = module.HmacSha256(b"Jefe")
            assert hasher.hex("what do ya want for nothing?") == expected
            assert hasher.digest(b"what do ya want for nothing?").hex() == expected
            assert module.sha256_hex("abc") == abc


@PORTABLE
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
@given(key=keys, text=texts, size=st.integers(0, 32))
def test_hex_and_sha256_hex_are_hashlib(
    portable: bool, module: ModuleType, key: bytes, text: str, size: int
) -> None:
    expected = hmac.digest(key, text.encode(), "sha256")[:size].hex()
    assert ids.PureHmac(key).hex(text, size) == expected
    with compression(portable):
        assert module.HmacSha256(key).hex(text, size) == expected
        assert module.sha256_hex(text) == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("size", [-1, 33])
def test_a_hex_size_beyond_the_digest_is_refused_alike(size: int) -> None:
    for hasher in [ids.PureHmac(b"k"), *(m.HmacSha256(b"k") for m in MODULES)]:
        with pytest.raises(ValueError, match="size"):
            hasher.hex("id", size)


def test_a_lone_surrogate_is_refused_like_str_encode() -> None:
    """What ``str.encode`` refuses, the native hashes refuse with the same error."""
    for hasher in [ids.PureHmac(b"k"), *(m.HmacSha256(b"k") for m in MODULES)]:
        with pytest.raises(UnicodeEncodeError):
            hasher.hex("a\ud800")
    for module in MODULES:
        with pytest.raises(UnicodeEncodeError):
            module.sha256_hex("a\ud800")


def test_the_sha_extensions_are_used_where_the_cpu_has_them() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    for module in MODULES:
        assert module.use_portable(False) is ("sha_ni" in flags)
        assert module.use_portable(True) is False
        module.use_portable(False)


def test_the_router_hashes_go_through_the_native_code() -> None:
    """consent.ids and the tokenize transform take the native hashes when they are built."""
    if ids._native is not None:
        assert type(ids.hmac_key(b"k")).__name__ == "HmacSha256"
    if fields._native is not None:
        assert type(fields._hmac_base(b"k")).__name__ == "HmacSha256"
