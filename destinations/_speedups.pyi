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

def apply(
    node: Rule, value: Any, key: bytes, transform: Callable[[Any, Any, bytes], Any], dropped: object
) -> Any: ...
