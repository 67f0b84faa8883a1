"""Process settings from the environment (prefix ``ROUTER_``), via pydantic-settings.

The only reader of ``ROUTER_*`` variables: everything else takes a ``Settings`` (or a value
derived here, such as ``audit_key_bytes``). ``router.edge.tokens.tokens_of`` builds the token table
from it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from router.core.sealing import KeyRing, Sealer


class Settings(BaseSettings):
    """What an operator sets per process; the routing file holds everything else."""

    model_config = SettingsConfigDict(env_prefix="ROUTER_", extra="ignore")

    config: Path = Path("config/router.yaml")
    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "0.0.0.0"  # noqa: S104 - a service listens on all interfaces by default
    port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    redis_timeout_ms: int = Field(default=2000, ge=50)
    retry_after_s: int = Field(default=5, ge=1)
    shutdown_timeout_s: float = Field(default=10.0, ge=0)
    http_idle_timeout_s: float = Field(default=30.0, gt=0)
    """A connection that sends no request for this long is closed: before its first request
    (a client that connects and says nothing), between requests (keep-alive), and while its
    request headers are still incomplete. Behind a load balancer, set it above the balancer's
    own idle timeout (AWS ALB: 60 s)."""
    http_read_timeout_s: float = Field(default=30.0, gt=0)
    """A request whose body has not fully arrived this long after its headers is answered
    ``408 request_timeout`` and its connection closed."""
    tokenize_secret: SecretStr | None = None
    """Master secret from which a per-destination tokenize key is derived (when a destination
    sets no ``tokenize_key`` of its own)."""
    operator_token: SecretStr | None = None
    """Bearer token with the ``operator`` role of the operator API (erasure, holds, dead
    letters); kept from 0.1, where it authorised ``POST /admin/erase``."""
    admin_tokens: SecretStr | None = None
    """The operator API's tokens: a JSON object ``{"<sha256 hex of a token>": "<role>"}`` or
    the path of a file holding one (``router.edge.tokens.parse_tokens``)."""
    audit_key: SecretStr | None = None
    """Key of the keyed tokens that stand for subject ids in the audit trail."""
    audit_max_records: int = Field(default=10_000_000, ge=1000)
    """How many audit records Redis keeps (a ``decisions`` record lists up to 500 events)."""
    audit_retention_days: float | None = Field(default=None, gt=0)
    """Also drop audit records older than this (export them first: ``router audit export``).
    At sustained volume, age bounds Redis memory where a record count cannot."""
    quarantine_retention_days: float = Field(default=7.0, gt=0)
    """Drop quarantined (rejected, redacted) events older than this."""
    consumer_name: str | None = None
    """Name of this process in the consumer groups (default: host name and pid)."""
    encryption_keys: SecretStr | None = None
    """Key ring of encryption at rest: ``id:base64,...`` of 32-byte keys, NEWEST FIRST (the
    first seals, all open); unset: nothing is sealed (``router.core.sealing``)."""
    subject_key: SecretStr | None = None
    """Secret of the keyed subject hashes in Redis (HMAC-SHA256 of each id); unset: plain
    SHA-256, as before 0.2, which a dictionary of ids can reverse."""

    @property
    def audit_key_bytes(self) -> bytes:
        """``audit_key`` as the HMAC key of the audit's subject tokens (empty when unset)."""
        return self.audit_key.get_secret_value().encode() if self.audit_key else b""

    @property
    def tokenize_key(self) -> str:
        """``tokenize_secret``'s value (empty when unset)."""
        return self.tokenize_secret.get_secret_value() if self.tokenize_secret else ""

    @property
    def subject_key_bytes(self) -> bytes:
        """``subject_key`` as the key of the subject hashes (empty: unkeyed SHA-256)."""
        return self.subject_key.get_secret_value().encode() if self.subject_key else b""

    def sealer(self) -> Sealer:
        """The sealer of ``encryption_keys``; ``KeyRingError`` (a ``ValueError`` naming the
        entry, never the key) when the ring is malformed."""
        text = self.encryption_keys.get_secret_value() if self.encryption_keys else ""
        return Sealer(KeyRing.parse(text))
