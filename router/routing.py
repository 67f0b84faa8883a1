"""The routing file: load, interpolate ``${VAR}``, validate everything, compile.

Validation touches no network and reports every problem at once, each with its path
(``destinations[2].fields[0]: invalid segment ...``). ``load_routing`` either returns a
``Routing`` ready for the hot path (compiled allowlists, built connectors) or raises
``ConfigError`` listing every problem.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from consent.policy import DEFAULT_CATEGORIES, ConsentPolicy, Missing
from destinations.aggregate import AggregateSettings, settings_problems
from destinations.base import Connector
from destinations.fields import Allowlist, Transform, compile_allowlist, parse_path
from destinations.registry import DESTINATION_TYPES
from router.errors import ConfigError


def _path(value: str) -> str:
    parse_path(value)
    return value


FieldPath = Annotated[str, AfterValidator(_path)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
IdentifierKind = Literal["card", "email", "phone", "iban", "ssn", "ip"]

_RETENTION = re.compile(
    r"^(?P<count>[1-9][0-9]{0,3}) ?(?P<unit>days?|weeks?|months?|years?)$|^(?P<word>session|none)$"
)


def _retention(value: str) -> str:
    if not _RETENTION.fullmatch(value.strip()) or value != value.strip():
        raise ValueError(
            "expected a duration such as '30 days', '13 months' or '2 years' "
            "(or 'session' / 'none'), as the recipient states it"
        )
    return value


Retention = Annotated[str, AfterValidator(_retention)]
"""The recipient's stated retention of what it receives (``destinations[].retention``)."""


class LegalBasis(StrEnum):
    """The lawful basis of a destination's processing (GDPR art. 6(1)),
    ``destinations[].legal_basis``."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsentWrites(StrEnum):
    """What a source's write key may do to stored consent (``sources[].consent_writes``)."""

    WITHDRAW = "withdraw"
    """The default: only withdrawals are stored; a grant that would widen stored consent is
    refused (``POST /v1/consent``: 403 ``consent_write_forbidden``)."""
    GRANT = "grant"
    """Any choice is stored, grants included (the site's consent manager)."""


class SourceConfig(_Strict):
    id: Identifier
    write_key: str = Field(min_length=1)
    cors_origins: list[str] = Field(default_factory=list)
    consent_writes: ConsentWrites = ConsentWrites.WITHDRAW

    @property
    def may_grant(self) -> bool:
        """Whether this source's consent writes may widen stored consent."""
        return self.consent_writes is ConsentWrites.GRANT


class RegionConfig(_Strict):
    missing: Missing


class MappingsConfig(_Strict):
    ids: dict[str, str] = Field(default_factory=dict)
    tcf: dict[str, list[Annotated[int, Field(ge=1, le=24)]]] = Field(default_factory=dict)
    google: dict[str, str] = Field(default_factory=dict)


class ConsentConfig(_Strict):
    categories: list[Identifier] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES))
    missing: Missing = Missing.DENY
    regions: dict[str, RegionConfig] = Field(default_factory=dict)
    honor_gpc: bool = True
    gpc_denies: list[str] = Field(default_factory=lambda: ["advertising"])
    max_age_days: int = Field(default=395, ge=1)
    geo_header: str | None = None
    mappings: MappingsConfig = Field(default_factory=MappingsConfig)


class DeliveryConfig(_Strict):
    batch_size: int = Field(default=1, ge=1)
    max_attempts: int = Field(default=10, ge=1, le=1000)
    timeout_ms: int = Field(default=10_000, ge=100)
    backoff_initial_ms: int = Field(default=500, ge=1)
    backoff_max_ms: int = Field(default=60_000, ge=1)
    retry_after_max_ms: int = Field(default=300_000, ge=0)
    concurrency: int = Field(default=1, ge=1, le=64)
    partitions: int = Field(default=1, ge=1, le=64)
    """Streams the destination's queue is spread over (each its own hash tag, so over the
    masters of a cluster); every worker process reads every partition."""


class DestinationConfig(_Strict):
    id: Identifier
    type: str
    purpose: str = ""
    requires: list[str]
    events: list[str] | None = None
    fields: list[FieldPath] = Field(default_factory=list)
    transforms: dict[FieldPath, Transform] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    dry_run: bool = False
    enabled: bool = True
    tokenize_key: str | None = None
    tcf_vendor_id: int | None = Field(default=None, ge=1)
    identifiers: dict[FieldPath, IdentifierKind] = Field(default_factory=dict)
    """Fields that legitimately carry personal data of a kind: the safety net lets it through."""
    hold_on_anomaly: bool = False
    """Stop delivering (events stay queued) when an anomaly is detected for this destination,
    until an operator releases or discards the hold."""
    forward_traceparent: bool | None = None
    """Send the W3C ``traceparent`` header; ``None``: the connector's default (webhooks yes,
    ad platforms no)."""
    recipient: str | None = Field(default=None, min_length=1, max_length=200)
    """Who receives the data (the record of processing); ``None``: the connector's platform
    (a webhook: its URL's host)."""
    legal_basis: LegalBasis | None = None
    retention: Retention | None = None


class LimitsConfig(_Strict):
    max_event_bytes: int = Field(default=32 * 1024, ge=256)
    max_request_bytes: int = Field(default=500 * 1024, ge=1024)
    max_batch_events: int = Field(default=2500, ge=1)
    max_string_chars: int = Field(default=8192, ge=16)
    max_depth: int = Field(default=16, ge=2, le=64)
    backlog_memory_ratio: float = Field(default=0.9, gt=0, le=1)
    """Answer 429 (``backlog``) while Redis' ``used_memory`` is above this share of its
    ``maxmemory``, before a full Redis refuses writes (no check when ``maxmemory`` is 0)."""


class MonitoringConfig(_Strict):
    """Anomaly detection (``router.compliance.anomaly.MonitorSettings`` takes the same names)."""

    alert_webhook: str | None = Field(default=None, pattern=r"^https?://\S+$")
    alert_timeout_ms: int = Field(default=5000, ge=100)
    volume_floor: int = Field(default=1000, ge=0)
    volume_factor: float = Field(default=10.0, gt=1)
    baseline_days: int = Field(default=7, ge=1, le=60)
    min_baseline_days: int = Field(default=3, ge=1, le=60)
    recent_hours: int = Field(default=24, ge=1, le=24 * 14)
    drift_learning_minutes: int = Field(default=60, ge=0)
    max_fields_per_source: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _baseline_days(self) -> MonitoringConfig:
        if self.min_baseline_days > self.baseline_days:
            raise ValueError("min_baseline_days must not exceed baseline_days")
        return self


class RoutingFile(_Strict):
    sources: list[SourceConfig] = Field(min_length=1)
    consent: ConsentConfig = Field(default_factory=ConsentConfig)
    destinations: list[dict[str, Any]] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)


@dataclass(frozen=True, slots=True)
class CompiledDestination:
    """One destination ready for the hot path."""

    id: str
    type: str
    config: DestinationConfig
    connector: Connector[Any]
    allowlist: Allowlist
    requires: tuple[str, ...]
    events: frozenset[str] | None
    identifiers: Mapping[str, str]
    """Connector-declared and configured identifier fields, for the PII safety net."""


@dataclass(frozen=True, slots=True)
class Routing:
    """A validated, compiled routing file."""

    file: RoutingFile
    policy: ConsentPolicy
    destinations: tuple[CompiledDestination, ...]
    sources_by_key: Mapping[str, SourceConfig]
    digest: str = ""
    """SHA-256 hex of the routing file's text (what the audit trail records)."""
    partitions: Mapping[str, int] = field(init=False, repr=False, compare=False)
    """Destination id -> ``delivery.partitions`` (how many streams its queue has); made once,
    not per request (the ingest reads it for every request)."""

    def __post_init__(self) -> None:
        partitions = {d.id: d.config.delivery.partitions for d in self.destinations}
        object.__setattr__(self, "partitions", partitions)

    def destination(self, destination_id: str) -> CompiledDestination | None:
        """The destination with this id, if configured."""
        for destination in self.destinations:
            if destination.id == destination_id:
                return destination
        return None


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of the tree."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = env.get(name)
            if found is not None and (found or default is None):
                return found
            if default is not None:
                return default
            problems.append(f"{path or '(root)'}: environment variable {name} is not set")
            return ""

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env, _join(path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        text = f'"{text}"'
        return f"{path}[{text}]" if path else text
    return f"{path}.{text}" if path else text


def _pydantic_problems(error: ValidationError, prefix: str) -> list[str]:
    problems = []
    for item in error.errors():
        path = prefix
        for part in item["loc"]:
            path = _join(path, part)
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append(f"{path or '(root)'}: {message}")
    return problems


def parse_routing(
    text: str, env: Mapping[str, str] | None = None, tokenize_secret: str = ""
) -> Routing:
    """Validate a routing file's text completely; ``ConfigError`` lists every problem."""
    env = os.environ if env is None else env
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc)]) from None
    if not isinstance(raw, dict):
        raise ConfigError(["(root): the routing file must be a mapping"])
    problems: list[str] = []
    raw = interpolate(raw, env, "", problems)
    try:
        file: RoutingFile | None = RoutingFile.model_validate(raw)
    except ValidationError as exc:
        file = None
        problems.extend(_pydantic_problems(exc, ""))
    consent = file.consent if file else _consent_or_default(raw)
    categories = set(consent.categories)
    _check_consent(consent, problems)

    destinations: list[CompiledDestination] = []
    raw_destinations = raw.get("destinations") or []
    seen: set[str] = set()
    if isinstance(raw_destinations, list):
        for index, item in enumerate(raw_destinations):
            compiled = _destination(item, index, categories, tokenize_secret, problems)
            if compiled is None:
                continue
            if compiled.id in seen:
                problems.append(
                    f"destinations[{index}].id: duplicate destination id {compiled.id!r}"
                )
            seen.add(compiled.id)
            destinations.append(compiled)
    if file is not None:
        keys = [s.write_key for s in file.sources]
        for index, source in enumerate(file.sources):
            if keys.count(source.write_key) > 1:
                problems.append(f"sources[{index}].write_key: the same write key is used twice")
    if problems or file is None:
        raise ConfigError(problems)
    return Routing(
        file=file,
        policy=policy_of(consent),
        destinations=tuple(destinations),
        sources_by_key={s.write_key: s for s in file.sources},
        digest=hashlib.sha256(text.encode()).hexdigest(),
    )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where the YAML is broken and what kind of problem it is, never the text: PyYAML's own
    message quotes the broken line, which may hold a write key or an API secret."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    # The problem names token kinds ('<block end>') but may quote text (an alias, a character).
    problem = _QUOTED.sub(lambda m: m[0] if m[0].startswith("'<") else "'…'", str(problem))
    return f"(root): not valid YAML{where}: {problem}"


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def load_routing(
    path: Path, env: Mapping[str, str] | None = None, tokenize_secret: str = ""
) -> Routing:
    """Read and validate a routing file from disk."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"(file): cannot read {path}: {exc.strerror}"]) from exc
    return parse_routing(text, env, tokenize_secret)


def _consent_or_default(raw: Mapping[str, Any]) -> ConsentConfig:
    try:
        return ConsentConfig.model_validate(raw.get("consent") or {})
    except ValidationError:
        return ConsentConfig()


def _check_consent(consent: ConsentConfig, problems: list[str]) -> None:
    categories = set(consent.categories)
    for name, group in (("ids", consent.mappings.ids), ("google", consent.mappings.google)):
        for key, category in group.items():
            if category not in categories:
                problems.append(
                    f"consent.mappings.{name}.{key}: unknown category {category!r}"
                    f" (categories: {', '.join(consent.categories)})"
                )
    for category in consent.mappings.tcf:
        if category not in categories:
            problems.append(f"consent.mappings.tcf.{category}: unknown category {category!r}")
    for index, category in enumerate(consent.gpc_denies):
        if category not in categories:
            problems.append(f"consent.gpc_denies[{index}]: unknown category {category!r}")


def policy_of(consent: ConsentConfig) -> ConsentPolicy:
    """The pure consent policy for the resolver."""
    return ConsentPolicy(
        categories=tuple(consent.categories),
        missing=consent.missing,
        regions={k.upper(): v.missing for k, v in consent.regions.items()},
        honor_gpc=consent.honor_gpc,
        gpc_denies=tuple(consent.gpc_denies),
        max_age_days=consent.max_age_days,
        ids=dict(consent.mappings.ids),
        tcf={k: tuple(v) for k, v in consent.mappings.tcf.items()},
        google=dict(consent.mappings.google),
        geo_header=consent.geo_header,
    )


def _destination(
    raw: Any, index: int, categories: set[str], tokenize_secret: str, problems: list[str]
) -> CompiledDestination | None:
    prefix = f"destinations[{index}]"
    if isinstance(raw, dict) and "requires" not in raw:
        problems.append(
            f"{prefix}.requires: required field is missing; a destination that needs no consent "
            "must say `requires: []`"
        )
    try:
        config = DestinationConfig.model_validate(raw)
    except ValidationError as exc:
        problems.extend(
            p
            for p in _pydantic_problems(exc, prefix)
            if not p.startswith(f"{prefix}.requires: required")
        )
        if isinstance(raw, dict):
            _settings_of(raw.get("type"), raw.get("settings", {}), prefix, problems)
        return None
    count = len(problems)
    if config.legal_basis is LegalBasis.CONSENT and not config.requires:
        problems.append(
            f"{prefix}.legal_basis: 'consent' needs the consent categories in `requires` "
            "(`requires: []` sends without consent)"
        )
    for position, category in enumerate(config.requires):
        if category not in categories:
            problems.append(f"{prefix}.requires[{position}]: unknown category {category!r}")
    connector_class = DESTINATION_TYPES.get(config.type)
    if connector_class is None:
        problems.append(
            f"{prefix}.type: unknown destination type {config.type!r}"
            f" (known: {', '.join(sorted(DESTINATION_TYPES))})"
        )
        return None
    settings = _settings_of(config.type, config.settings, prefix, problems)
    if settings is None:
        return None
    allowed = set(config.fields) | {
        p for p, t in config.transforms.items() if t is not Transform.DROP
    }
    for requirement in connector_class.required_fields:
        if not allowed.intersection(requirement):
            problems.append(
                f"{prefix}.fields: a {config.type} destination needs "
                f"{' or '.join(requirement)} in its allowlist"
            )
    if config.delivery.batch_size > connector_class.max_batch_size:
        problems.append(
            f"{prefix}.delivery.batch_size: {config.type} accepts at most "
            f"{connector_class.max_batch_size} events per request"
        )
    if isinstance(settings, AggregateSettings):
        for where, message in settings_problems(settings, config.events, config.fields):
            problems.append(f"{prefix}.{where}: {message}")
    key = _tokenize_key(config, tokenize_secret)
    if Transform.TOKENIZE in config.transforms.values() and not key:
        problems.append(
            f"{prefix}.tokenize_key: the tokenize transform needs a key: set tokenize_key "
            "(e.g. ${MY_TOKENIZE_KEY}) or ROUTER_TOKENIZE_SECRET"
        )
    if len(problems) > count:
        return None
    try:
        connector = connector_class(config.id, settings)
    except ValueError as exc:
        problems.append(f"{prefix}.settings: {exc}")
        return None
    return CompiledDestination(
        id=config.id,
        type=config.type,
        config=config,
        connector=connector,
        allowlist=compile_allowlist(config.fields, config.transforms, key),
        requires=tuple(config.requires),
        events=frozenset(config.events) if config.events is not None else None,
        identifiers={**connector_class.identifier_fields, **config.identifiers},
    )


def _settings_of(kind: Any, raw: Any, prefix: str, problems: list[str]) -> BaseModel | None:
    connector_class = DESTINATION_TYPES.get(kind) if isinstance(kind, str) else None
    if connector_class is None:
        return None
    try:
        return connector_class.settings_model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, f"{prefix}.settings"))
        return None


def _tokenize_key(config: DestinationConfig, tokenize_secret: str) -> bytes:
    if config.tokenize_key:
        return config.tokenize_key.encode()
    if tokenize_secret:
        return hmac.new(tokenize_secret.encode(), config.id.encode(), hashlib.sha256).digest()
    return b""
