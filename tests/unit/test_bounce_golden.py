"""Golden tests: real bounces from each supported MTA family (tests/golden/bounces/<family>/),
each ``name.eml`` beside the ``name.json`` it must parse to.  Origins: SOURCES.md there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from outpost.bounces import parse_bounce
from outpost.bounces.textscan import FAMILY_ROWS, rows_disabled

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "bounces"
CASES = sorted(GOLDEN.glob("*/*.eml"))
FIELDS = ("address", "status", "action", "kind", "reason", "reply_code")


def _view(raw: bytes) -> dict:
    rep = parse_bounce(raw)
    return {
        "kind": rep.kind,
        "family": rep.family,
        "recipients": [{f: getattr(r, f) for f in FIELDS} for r in rep.recipients],
    }


def test_every_family_has_a_sample() -> None:
    families = {p.parent.name for p in CASES}
    for fam in ("rfc3464", "postfix", "exim", "qmail", "exchange", "notes", "imailserver",
                "gmail", "mfilter", "webmail", "generic", "arf", "rfc3834", "dragonfly",
                "fallback", "messagingserver", "receivingses", "biglobe", "amazonses",
                "postfix-generated", "mda", "vendor", "exim-generated", "sendmail-generated",
                "opensmtpd-generated", "courier-generated", "office365", "synthesized",
                "dma-generated", "nullmailer-generated", "dovecot-generated",
                "amavis-generated"):
        assert fam in families, fam
    for p in CASES:
        assert p.with_suffix(".json").exists(), p


@pytest.mark.parametrize("eml", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_golden(eml: Path) -> None:
    expected = json.loads(eml.with_suffix(".json").read_text())
    view = _view(eml.read_bytes())
    assert view == {k: expected[k] for k in view}


# Samples written from a format's documentation (synthesized/): each json keeps Sisimai
# 4.25's own answer for the file ("sisimai"), so the reference comes from a peer we did not
# write.  Ours must agree on every address, a real status code, the reason and hard/soft
# (unless "reason_differs" says why not), with every family row switched off: these are the
# families the parser has no row for, read by its generic layer alone.
SYNTH = sorted((GOLDEN / "synthesized").glob("*.eml"))
PSEUDO = re.compile(r"^\d\.0\.9\d\d$")


@pytest.mark.parametrize("eml", SYNTH, ids=[p.stem for p in SYNTH])
def test_synthesized_sample_agrees_with_sisimai_without_family_rows(eml: Path) -> None:
    expected = json.loads(eml.with_suffix(".json").read_text())
    assert expected["provenance"].startswith("synthesized-from-documentation")
    with rows_disabled(FAMILY_ROWS):
        report = parse_bounce(eml.read_bytes())
    got = {r.address.lower(): r for r in report.recipients}
    assert set(got) == {e["address"].lower() for e in expected["sisimai"]}
    for e in expected["sisimai"]:
        r = got[e["address"].lower()]
        if not PSEUDO.match(e["deliverystatus"]):
            assert r.status == e["deliverystatus"], e
        if "reason_differs" not in expected:  # hard/soft follows from the reason
            assert (r.kind, r.reason) == (e["kind"], e["reason"]), e


# Real bounces from MTAs whose samples keep a reference from outside our code: Sisimai
# 4.25's answer ("sisimai"), or, where Sisimai recognises nothing (dma: it has no DragonFly
# module), an answer checked by hand ("reference_by_hand").  Ours must agree on the same
# fields with every family row switched off: the generic layer reads them unseen.
REAL = sorted(p for p in GOLDEN.glob("*-generated/*.eml")
              if {"sisimai", "reference_by_hand"} & set(json.loads(p.with_suffix(".json")
                                                                  .read_text())))


@pytest.mark.parametrize("eml", REAL, ids=[f"{p.parent.name}/{p.stem}" for p in REAL])
def test_real_mta_bounce_agrees_with_its_reference_without_family_rows(eml: Path) -> None:
    expected = json.loads(eml.with_suffix(".json").read_text())
    reference = expected.get("sisimai") or expected["reference_by_hand"]
    with rows_disabled(FAMILY_ROWS):
        report = parse_bounce(eml.read_bytes())
    got = {r.address.lower(): r for r in report.recipients}
    assert set(got) == {e["address"].lower() for e in reference}
    for e in reference:
        r = got[e["address"].lower()]
        assert (r.kind, r.reason) == (e["kind"], e["reason"]), e
        if not PSEUDO.match(e["deliverystatus"]):  # x.0.9xx: Sisimai found no code
            assert r.status == e["deliverystatus"], e
        if e["action"]:  # Sisimai leaves it empty where the report has no Action field
            assert r.action == e["action"], e


def test_real_mta_bounces_with_a_reference() -> None:
    assert {p.parent.name for p in REAL} >= {"dma-generated", "nullmailer-generated",
                                              "dovecot-generated", "amavis-generated"}


def test_synthesized_samples_cover_families_absent_from_the_corpus() -> None:
    assert len(SYNTH) >= 32


@pytest.mark.parametrize("eml", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_line_endings_do_not_matter(eml: Path) -> None:
    # RFC 5322 says CRLF; real bounces arrive with LF, CRLF or bare CR (old Mac MTAs).
    raw = eml.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lf = _view(raw)
    assert _view(raw.replace(b"\n", b"\r\n")) == lf
    assert _view(raw.replace(b"\n", b"\r")) == lf


def test_report_carries_the_original_message() -> None:
    rep = parse_bounce((GOLDEN / "rfc3464" / "rhost-tencent-01.eml").read_bytes())
    assert rep.reporting_mta == "mail.example.net"
    assert rep.arrival_date and rep.arrival_date.startswith("Thu,")
    names = [k.lower() for k, _ in rep.original_headers]
    assert "received" in names and "from" in names
    assert rep.to_addresses  # the bounce's own To:, where a VERP token would be
    r = rep.recipients[0]
    assert r.remote_mta == "mx3.qq.com"
    assert r.original_recipient == "nekochan@qq.example.cn"
