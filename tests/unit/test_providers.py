"""Provider grouping and per-provider limits (issue 11 items 1 and 2)."""

from __future__ import annotations

import pytest

from outpost.config import Settings
from outpost.delivery.providers import DEFAULT_LIMITS, LIMITS, PROVIDERS, limits_for, parse_overrides, provider_for
from outpost.errors import ConfigError


@pytest.mark.parametrize(("mx", "provider"), [
    ("gmail-smtp-in.l.google.com.", "google"),
    ("ASPMX.L.GOOGLE.COM", "google"),
    ("example-com.mail.protection.outlook.com", "microsoft"),
    ("hotmail-com.olc.protection.outlook.com", "microsoft"),
    ("mta5.am0.yahoodns.net", "yahoo"),
    ("mx-aol.mail.gm0.yahoodns.net", "yahoo"),
    ("mx01.mail.icloud.com", "apple"),
    ("mx00.gmx.net", "united-internet"),
    ("mxs.mail.ru", "mailru"),
    ("mail.protonmail.ch", "proton"),
])
def test_mx_hosts_map_to_their_provider(mx: str, provider: str) -> None:
    assert provider_for(mx) == provider


def test_an_unknown_host_is_its_own_provider_and_suffixes_match_whole_labels() -> None:
    assert provider_for("MX1.Example.org.") == "mx1.example.org"
    # "notgoogle.com" ends with "google.com" but is not Google
    assert provider_for("mx.notgoogle.com") == "mx.notgoogle.com"


def test_every_row_has_a_source_and_no_suffix_belongs_to_two_providers() -> None:
    seen: dict[str, str] = {}
    for p in PROVIDERS:
        assert p.source and p.suffixes
        for s in p.suffixes:
            assert s == s.lower() and s not in seen, (s, seen.get(s))
            seen[s] = p.name
    assert all(limits.source for limits in [DEFAULT_LIMITS, *LIMITS.values()])


def test_defaults_are_kumomtas_published_shaping() -> None:
    assert (DEFAULT_LIMITS.connections, DEFAULT_LIMITS.per_connection) == (10, 100)
    assert (limits_for("google").connections, limits_for("google").per_connection) == (5, 50)
    assert (limits_for("microsoft").connections, limits_for("microsoft").per_connection) == (5, 50)
    assert limits_for("yahoo").per_connection == 20
    assert limits_for("mx.example.org") == DEFAULT_LIMITS


def test_overrides_from_the_environment_apply_default_then_provider() -> None:
    s = Settings.from_env({"OUTPOST_SHAPING": '{"default": {"per_minute": 600}, "google": {"connections": 2}}'})
    g = limits_for("google", s.shaping)
    assert (g.connections, g.per_connection, g.per_minute) == (2, 50, 600)
    assert "OUTPOST_SHAPING.google" in g.source
    other = limits_for("mx.example.org", s.shaping)
    assert (other.connections, other.per_minute) == (10, 600)


@pytest.mark.parametrize(("raw", "names"), [
    ("not json", "OUTPOST_SHAPING"),
    ("[1]", "OUTPOST_SHAPING"),
    ('{"google": 3}', "OUTPOST_SHAPING.google"),
    ('{"google": {"conections": 3}}', "OUTPOST_SHAPING.google.conections"),
    ('{"google": {"connections": 0}}', "OUTPOST_SHAPING.google.connections"),
    ('{"google": {"connections": true}}', "OUTPOST_SHAPING.google.connections"),
    ('{"google": {"connections": null}}', "OUTPOST_SHAPING.google.connections"),
])
def test_a_bad_override_names_its_field(raw: str, names: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_overrides(raw)
    assert str(e.value).startswith(names + ":")


def test_no_override_is_no_change() -> None:
    assert parse_overrides("") == {} and parse_overrides(None) == {} and Settings.from_env({}).shaping == {}
    assert parse_overrides('{"google": {"per_minute": null}}') == {"google": {"per_minute": None}}
