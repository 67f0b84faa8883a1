"""The routing file: interpolation, complete validation with paths, compilation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.compliance.anomaly import MonitorSettings
from router.errors import ConfigError
from router.routing import MonitoringConfig, parse_routing

ROOT = Path(__file__).resolve().parents[3]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problems a routing file has (asserting it has some)."""
    with pytest.raises(ConfigError) as caught:
        parse_routing(text, env=env or {})
    return caught.value.problems


def test_example_routing_file_is_valid() -> None:
    """config/router.yaml validates with no environment (defaults everywhere)."""
    routing = parse_routing((ROOT / "config" / "router.yaml").read_text(), env={})
    assert {d.id for d in routing.destinations} == {"analytics-hook", "partner-hook"}
    assert all(d.config.dry_run for d in routing.destinations)


def test_consent_writes_defaults_to_withdraw_and_is_validated_with_its_path() -> None:
    """``consent_writes`` is ``grant`` or ``withdraw`` (the default); anything else is an error
    at its path; the example file lets only the web source (its consent manager) grant."""
    text = """
sources:
  - {id: cmp, write_key: a, consent_writes: grant}
  - {id: partner, write_key: b}
  - {id: app, write_key: c, consent_writes: withdraw}
"""
    routing = parse_routing(text, env={})
    assert [s.may_grant for s in routing.file.sources] == [True, False, False]
    found = problems(
        "sources: [{id: web, write_key: k}, {id: x, write_key: j, consent_writes: all}]"
    )
    assert found == ["sources[1].consent_writes: Input should be 'withdraw' or 'grant'"]
    example = parse_routing((ROOT / "config" / "router.yaml").read_text(), env={})
    assert {s.id: s.may_grant for s in example.file.sources} == {"web": True, "server": False}


def test_reports_every_problem_with_its_path_at_once() -> None:
    """Errors in several places are all reported, each with its path."""
    text = f"""
sources: [{{id: web, write_key: k}}]
destinations:
  - id: one
    type: webhook
    requires: [analytics]
    fields: ["a..b", "ok"]
    settings: {{url: "https://x.example", secret: nope}}
  - id: two
    type: nosuch
    requires: [sorcery]
  - id: three
    type: webhook
    fields: [x]
    extra: 1
    settings: {{url: "https://x.example", secret: {SECRET}}}
"""
    found = problems(text)
    expected = [
        "destinations[0].fields[0]:",
        "destinations[0].settings.secret:",
        "destinations[1].requires[0]: unknown category 'sorcery'",
        "destinations[1].type: unknown destination type 'nosuch'",
        "destinations[2].requires: required field is missing",
        "destinations[2].extra: unknown field",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in found), (prefix, found)


def test_interpolates_variables_and_defaults() -> None:
    """${VAR} and ${VAR:-default} are filled from the environment."""
    text = """
sources: [{id: web, write_key: "${KEY}"}, {id: app, write_key: "${APP_KEY:-fallback}"}]
"""
    routing = parse_routing(text, env={"KEY": "from-env"})
    assert set(routing.sources_by_key) == {"from-env", "fallback"}


def test_missing_variable_is_reported_with_its_path() -> None:
    """An unset ${VAR} without default names the variable and where it is used."""
    found = problems("sources: [{id: web, write_key: '${NOPE}'}]")
    assert "sources[0].write_key: environment variable NOPE is not set" in found


def test_tokenize_needs_a_key() -> None:
    """A tokenize transform without tokenize_key nor ROUTER_TOKENIZE_SECRET is an error."""
    text = f"""
sources: [{{id: web, write_key: k}}]
destinations:
  - {{id: d, type: webhook, requires: [], transforms: {{userId: tokenize}},
     settings: {{url: "https://x.example", secret: {SECRET}}}}}
"""
    assert any(p.startswith("destinations[0].tokenize_key:") for p in problems(text))
    routing = parse_routing(text, env={}, tokenize_secret="process-secret")
    assert routing.destinations[0].allowlist.tokenize_key


def test_connector_required_fields_must_be_allowlisted() -> None:
    """GA4 needs a client id: an allowlist without anonymousId fails."""
    text = """
sources: [{id: web, write_key: k}]
destinations:
  - {id: g, type: ga4, requires: [analytics], fields: [event],
     settings: {measurement_id: G-TEST123, api_secret: s}}
"""
    assert any("anonymousId" in p for p in problems(text))


def test_duplicates_are_refused() -> None:
    """Two destinations with one id, two sources with one key."""
    text = f"""
sources: [{{id: a, write_key: k}}, {{id: b, write_key: k}}]
destinations:
  - {{id: d, type: webhook, requires: [], settings: {{url: "https://x.example", secret: {SECRET}}}}}
  - {{id: d, type: webhook, requires: [], settings: {{url: "https://x.example", secret: {SECRET}}}}}
"""
    found = problems(text)
    assert any(p.startswith("destinations[1].id: duplicate") for p in found)
    assert any(p.startswith("sources[1].write_key:") for p in found)


def test_unknown_mapping_category_is_refused() -> None:
    """consent.mappings may only name configured categories."""
    found = problems("sources: [{id: a, write_key: k}]\nconsent: {mappings: {ids: {C9: wizardry}}}")
    assert any(p.startswith("consent.mappings.ids.C9: unknown category") for p in found)


def test_not_yaml_is_one_clear_problem() -> None:
    """Broken YAML is reported, not raised as a traceback."""
    assert problems("sources: [unclosed")[0].startswith("(root): not valid YAML")


@pytest.mark.parametrize(
    "text",
    [
        "sources:\n  - {id: web, write_key: sk_live_9f8e7d6c: oops}\n",
        "sources:\n  - id: web\n    write_key: 'sk_live_9f8e7d6c\n",
        "destinations:\n  - settings: {secret: *sk_live_9f8e7d6c}\n",
        "sources:\n\t- write_key: sk_live_9f8e7d6c\n",
    ],
)
def test_broken_yaml_names_the_position_never_the_text(text: str) -> None:
    """PyYAML quotes the broken line; a reload logs the problems, so a secret on that line
    would land in the logs. Only the position and the kind of problem are reported."""
    (problem,) = problems(text)
    assert "sk_live" not in problem
    assert re.match(r"\(root\): not valid YAML at line \d+, column \d+: \S", problem)


MONITORED = f"""
sources: [{{id: web, write_key: k}}]
monitoring:
  alert_webhook: https://alerts.example/hook
  volume_floor: 50
  volume_factor: 4
destinations:
  - id: held
    type: webhook
    requires: []
    fields: [event]
    hold_on_anomaly: true
    forward_traceparent: false
    identifiers: {{properties.email: email}}
    settings: {{url: "https://x.example", secret: {SECRET}}}
"""


def test_monitoring_hold_and_traceparent_keys() -> None:
    """The monitoring block, hold_on_anomaly and the traceparent override are read."""
    routing = parse_routing(MONITORED, env={})
    (held,) = routing.destinations
    assert held.config.hold_on_anomaly is True
    assert held.config.forward_traceparent is False
    assert held.identifiers["properties.email"] == "email"
    settings = MonitorSettings(**routing.file.monitoring.model_dump())
    assert (settings.volume_floor, settings.volume_factor) == (50, 4.0)
    assert settings.alert_webhook == "https://alerts.example/hook"
    assert len(routing.digest) == 64


def test_monitoring_defaults_are_the_monitors_defaults() -> None:
    """An absent monitoring block gives the monitor its own defaults; destinations hold nothing
    and use the connector's traceparent default."""
    routing = parse_routing(MONITORED.replace("hold_on_anomaly: true", ""), env={})
    assert MonitorSettings(**MonitoringConfig().model_dump()) == MonitorSettings()
    assert routing.destinations[0].config.hold_on_anomaly is False
    assert parse_routing(MONITORED, env={}).digest != routing.digest


def test_bad_monitoring_values_are_reported_with_their_paths() -> None:
    """Factors, floors, day counts and the alert URL are checked, each with its path."""
    text = MONITORED.replace("volume_factor: 4", "volume_factor: 1\n  baseline_days: 2").replace(
        "https://alerts.example/hook", "ftp://nope"
    )
    text = text.replace("volume_floor: 50", "volume_floor: -1\n  min_baseline_days: 3")
    found = problems(text)
    for prefix in (
        "monitoring.volume_factor:",
        "monitoring.volume_floor:",
        "monitoring.alert_webhook:",
    ):
        assert any(p.startswith(prefix) for p in found), (prefix, found)
    found = problems(
        MONITORED.replace("volume_floor: 50", "baseline_days: 2\n  min_baseline_days: 3")
    )
    assert found == ["monitoring: min_baseline_days must not exceed baseline_days"]
