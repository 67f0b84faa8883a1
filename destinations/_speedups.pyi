# The native walkers of destinations/_speedups.pyx (see destinations/fields.py and dlp.py).
from collections.abc import Callable
from typing import Any

def quiet(text: str) -> bool: ...
def may_hold_findings(
    values: list[Any],
    ignored: set[int] | None,
    scan: Callable[[str], object],
    is_card: Callable[[Any], bool],
    min_text: int,
) -> bool: ...

class Rule:
    transform: object
    leaf: bool
    whole: bool
    each: Rule | None
    rules: tuple[tuple[str, Rule | None], ...]
    def __init__(
        self,
        transform: object,
        leaf: bool,
        whole: bool,
        each: Rule | None,
        rules: tuple[tuple[str, Rule | None], ...],
    ) -> None: ...

class Copier:
    def __init__(
        self,
        root: Rule,
        key: bytes,
        transform: Callable[[Any, Any, bytes], Any],
        dropped: object,
        skip: frozenset[str],
    ) -> None: ...
    def apply(self, value: Any) -> dict[str, Any]: ...
    def apply_checked(self, value: Any, min_text: int) -> tuple[dict[str, Any], bool]: ...

# native/hmac.pxi (the tokenize transform's HMAC; see destinations/fields.py)
def use_portable(portable: bool) -> bool: ...
def sha256_hex(text: str) -> str: ...

class HmacSha256:
    def __init__(self, key: bytes) -> None: ...
    def digest(self, message: bytes) -> bytes: ...
    def hex(self, text: str, size: int = 32) -> str: ...
