"""The consent package's error tree.

    ConsentError
    └── DecodeError            a consent string or object could not be decoded
        ├── TCStringError      IAB TCF v2 TC string
        ├── GPPStringError     IAB GPP string (and its sections)
        ├── USPrivacyError     IAB US Privacy string (``1YNN``)
        ├── ConsentModeError   Google Consent Mode map
        └── CMPFormatError     OneTrust, Segment, RudderStack category payloads

Decoders raise these; the resolver turns them into the ``consent_unparseable`` reason, so no
exception from a consent string ever reaches the HTTP edge.
"""

from __future__ import annotations


class ConsentError(Exception):
    """Base of every error raised by the consent package."""


class DecodeError(ConsentError):
    """A consent signal could not be decoded.

    ``code`` is a short stable identifier (``bad_base64``, ``truncated``, ``bad_version``...),
    ``message`` a human sentence. Neither contains the consent string itself.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TCStringError(DecodeError):
    """An IAB TCF v2 TC string is malformed or violates a validity rule."""


class GPPStringError(DecodeError):
    """An IAB GPP string, or one of its sections, is malformed."""


class USPrivacyError(DecodeError):
    """A US Privacy string is malformed."""


class ConsentModeError(DecodeError):
    """A Google Consent Mode map has an unknown type or value."""


class CMPFormatError(DecodeError):
    """A CMP category payload (OneTrust, Segment, RudderStack) is malformed."""
