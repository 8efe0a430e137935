"""The pricing arithmetic of bench/cost.py (bench/cost_model.py): rounding, chunks, the fixed
costs of each NatMode and the break-even volume against SES. No timing here: the bench measures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "cost_model.py"
_spec = importlib.util.spec_from_file_location("cost_model", _PATH)
assert _spec and _spec.loader
cm = importlib.util.module_from_spec(_spec)
sys.modules["cost_model"] = cm  # dataclasses look the module up by name
_spec.loader.exec_module(cm)


def test_lambda_bills_each_invocation_rounded_up_to_the_millisecond() -> None:
    assert cm.billed_ms(0.0101) == 11
    assert cm.billed_ms(0.010) == 10  # exactly 10 ms is not 11
    assert cm.billed_ms(0.0) == 1  # the minimum
    # 100 invocations of 10.2 ms at 1,024 MB: 100 x 11 ms x 1 GB = 1.1 GB-s
    assert cm.gb_seconds([0.0102] * 100, 1024) == pytest.approx(1.1)
    # at 512 MB, half
    assert cm.gb_seconds([0.0102] * 100, 512) == pytest.approx(0.55)


def test_sqs_bills_one_request_per_64_kb_chunk() -> None:
    assert cm.sqs_requests(0) == 1
    assert cm.sqs_requests(65536) == 1
    assert cm.sqs_requests(65537) == 2
    assert cm.sqs_requests(256 * 1024) == 4
    assert cm.ses_inbound_chunks(1) == 1 and cm.ses_inbound_chunks(256 * 1024 + 1) == 2


def test_dynamodb_local_transactional_writes_are_brought_to_aws_rate() -> None:
    # 2 units per KB in a transaction (AWS), where DynamoDB Local reports 4
    assert cm.aws_units("TransactWriteItems", 16.0) == 8.0
    for op in ("PutItem", "UpdateItem", "TransactGetItems", "Query"):
        assert cm.aws_units(op, 4.0) == 4.0


def test_cost_by_kind_prices_each_kind_and_refuses_an_unpriced_one() -> None:
    usage = {"ddb_write_unit": 2_000_000, "sqs_request": 1_000_000, "s3_put": 1_000,
             "lambda_gb_s": 1.0, "nat_gateway_byte": cm.GB}
    got = cm.cost_by_kind(usage)
    assert got["ddb_write_unit"] == pytest.approx(1.25)  # $0.625 per million
    assert got["sqs_request"] == pytest.approx(0.40)
    assert got["s3_put"] == pytest.approx(0.005)
    assert got["lambda_gb_s"] == pytest.approx(0.0000133334)
    assert got["nat_gateway_byte"] == pytest.approx(0.045)
    with pytest.raises(KeyError, match="carrier_pigeon"):
        cm.cost_by_kind({"carrier_pigeon": 1})
    assert cm.per_thousand(0.5, 200) == pytest.approx(2.5)


def test_storage_is_priced_for_the_days_it_is_kept() -> None:
    # 1 GB kept 30 days in DynamoDB: 30 x 24 / 730 = 0.986 GB-months at $0.25
    months = cm.byte_months(cm.GB, 30)
    assert months == pytest.approx(cm.GB * 720 / 730)
    got = cm.cost_by_kind({"ddb_stored_byte_month": months})
    assert got["ddb_stored_byte_month"] == pytest.approx(0.2466, rel=1e-3)
    assert cm.cost_by_kind({"s3_stored_byte_month": cm.byte_months(cm.GB, 365 / 12)})[
        "s3_stored_byte_month"] == pytest.approx(0.023, rel=1e-3)


def test_the_fixed_network_cost_of_each_nat_mode() -> None:
    gateway = cm.network_fixed("gateway")
    assert gateway == pytest.approx({"nat_gateway": 0.045 * 730, "public_ipv4": 0.005 * 730})
    assert sum(gateway.values()) == pytest.approx(36.50)
    instance = cm.network_fixed("instance")
    assert sum(instance.values()) == pytest.approx(0.0042 * 730 + 0.08 * 8 + 0.005 * 730)  # $7.36
    # the Elastic IP is billed the same in both modes
    assert gateway["public_ipv4"] == instance["public_ipv4"]
    with pytest.raises(ValueError):
        cm.network_fixed("carrier")


def test_ses_anchor_includes_its_per_gb_charge() -> None:
    assert cm.ses_per_thousand(0) == pytest.approx(0.10)
    assert cm.ses_per_thousand(cm.GB) == pytest.approx(0.22)


def test_break_even_volume_against_ses() -> None:
    # $36.50 a month fixed, $0.01 per 1,000 variable against SES's $0.10: 36.5 / 0.09 x 1,000
    assert cm.break_even(0.01, 36.5, 0.10) == pytest.approx(405_555.56, rel=1e-6)
    # against SES with a dedicated IP ($24.95/month): only the difference has to be earned back
    assert cm.break_even(0.01, 36.5, 0.10, 24.95) == pytest.approx(128_333.33, rel=1e-6)
    # fixed costs below the anchor's and a lower variable price: cheaper at any volume
    assert cm.break_even(0.01, 7.36, 0.10, 24.95) == 0.0
    # a variable price at or above the anchor's: never cheaper
    assert cm.break_even(0.10, 36.5, 0.10) is None
    assert cm.break_even(0.2, 1.0, 0.10) is None


def test_every_price_has_a_source_and_the_table_a_date() -> None:
    assert cm.PRICES_DATE[:2] == "20" and len(cm.PRICES_DATE) == 10
    for table in (cm.VARIABLE, cm.FIXED, cm.SES):
        for kind, p in table.items():
            assert p.source.startswith("https://aws.amazon.com/"), kind
            assert p.usd > 0 and p.per > 0, kind


def test_the_inline_body_limit_is_where_s3_becomes_cheaper() -> None:
    """Settings.inline_body_limit (and the store's default) is the price table's break-even, not
    a taste: $0.0054 of S3 requests against ~$0.85 per million bytes in DynamoDB (30 days)."""
    from outpost.config import Settings
    from outpost.store import INLINE_LIMIT

    at = cm.inline_break_even()
    assert 6_000 < at < 6_700
    assert Settings().inline_body_limit == INLINE_LIMIT == pytest.approx(at, rel=0.02)
    # one more GET per retry of a deferred message moves it little; a shorter retention up
    assert cm.inline_break_even(loads=3) == pytest.approx(at, rel=0.08)
    assert cm.inline_break_even(retention_days=1) > at


def test_the_api_is_priced_both_ways_rest_with_its_waf_and_http_per_512_kb() -> None:
    # HTTP APIs meter requests in 512 KB increments; REST APIs and WAF per request.
    assert cm.http_api_requests(0) == 1 and cm.http_api_requests(512 * 1024) == 1
    assert cm.http_api_requests(512 * 1024 + 1) == 2
    # 1,003 requests for 1,000 emails (one POST each, 3 uploads): $3.50 + $0.60 vs $1.00 per million
    got = cm.api_per_thousand(1003, 1003, 1000)
    assert got["REST"] == pytest.approx(1003 * 4.10 / 1e6)
    assert got["HTTP"] == pytest.approx(1003 * 1.00 / 1e6)
    # The HTTP price is beside the REST one, never in a REST run's total.
    assert cm.VARIABLE["http_api_request"].source == "https://aws.amazon.com/api-gateway/pricing/"
    assert cm.cost_by_kind({"apigw_request": 1e6})["apigw_request"] == pytest.approx(3.50)
