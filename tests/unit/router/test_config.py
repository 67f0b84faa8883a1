"""The routing file: interpolation, complete validation with paths, compilation."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import parse_routing
from router.errors import ConfigError

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
