"""The price list and the arithmetic of bench/cost.py: what 1,000 emails cost, and when a month
of Outpost is cheaper than SES. Pure (no AWS, no clock); tests/unit/test_cost_model.py.

Prices: public on-demand list prices, us-east-1, as published on the pages in each entry's
`source` and known on PRICES_DATE. This machine has no internet access, so they were not
re-read on the day of a run: check the pages before quoting a figure. Free tiers are ignored
(they favour small senders, SES's included). A "GB" in AWS billing is 2**30 bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

PRICES_DATE = "2025-06-01"
HOURS_PER_MONTH = 730  # AWS's own monthly estimates use 730 hours
GB = 2**30
SQS_CHUNK = 64 * 1024  # "each 64 KB chunk of a payload is billed as 1 request"
SES_INBOUND_CHUNK = 256 * 1024  # SES receiving: "incoming mail chunk" of 256 KB
HTTP_API_CHUNK = 512 * 1024  # HTTP APIs: "requests are metered in 512 KB increments"
NAT_INSTANCE_DISK_GB = 8  # the AL2023 AMI's root volume (gp3)

_LAMBDA = "https://aws.amazon.com/lambda/pricing/"
_APIGW = "https://aws.amazon.com/api-gateway/pricing/"
_WAF = "https://aws.amazon.com/waf/pricing/"
_DDB = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
_SQS = "https://aws.amazon.com/sqs/pricing/"
_S3 = "https://aws.amazon.com/s3/pricing/"
_SM = "https://aws.amazon.com/secrets-manager/pricing/"
_VPC = "https://aws.amazon.com/vpc/pricing/"
_EC2 = "https://aws.amazon.com/ec2/pricing/on-demand/"
_EBS = "https://aws.amazon.com/ebs/pricing/"
_CW = "https://aws.amazon.com/cloudwatch/pricing/"
_SES = "https://aws.amazon.com/ses/pricing/"


@dataclass(frozen=True)
class Price:
    usd: float  # dollars ...
    per: float  # ... per this many units
    unit: str
    source: str

    def of(self, quantity: float) -> float:
        return self.usd * quantity / self.per


# Variable: priced per unit of use. The keys are the kinds bench/cost.py counts.
VARIABLE: dict[str, Price] = {
    "lambda_gb_s": Price(0.0000133334, 1, "GB-second, arm64", _LAMBDA),
    "lambda_request": Price(0.20, 1_000_000, "invocation", _LAMBDA),
    "apigw_request": Price(3.50, 1_000_000, "REST API request (first 333 M)", _APIGW),
    "waf_request": Price(0.60, 1_000_000, "web ACL request", _WAF),
    "ddb_write_unit": Price(0.625, 1_000_000, "on-demand write request unit", _DDB),
    "ddb_read_unit": Price(0.125, 1_000_000, "on-demand read request unit", _DDB),
    "sqs_request": Price(0.40, 1_000_000, "standard queue request (64 KB chunk)", _SQS),
    "s3_put": Price(0.005, 1_000, "S3 Standard PUT/COPY/POST/LIST", _S3),
    "s3_get": Price(0.0004, 1_000, "S3 Standard GET/HEAD and others", _S3),
    "secrets_call": Price(0.05, 10_000, "Secrets Manager API call", _SM),
    "nat_gateway_byte": Price(0.045, GB, "byte through the NAT gateway", _VPC),
    "internet_out_byte": Price(0.09, GB, "byte out to the internet (first 10 TB)", _EC2),
    "log_byte": Price(0.50, GB, "byte of CloudWatch Logs ingested (first tier)", _CW),
    "ses_inbound_mail": Price(0.10, 1_000, "mail received by SES (the DSNs)", _SES),
    "ses_inbound_chunk": Price(0.09, 1_000, "256 KB incoming mail chunk", _SES),
    # storage for as long as it is kept (RetentionDays): byte-months
    "ddb_stored_byte_month": Price(0.25, GB, "DynamoDB Standard byte-month (tables + indexes)", _DDB),
    "s3_stored_byte_month": Price(0.023, GB, "S3 Standard byte-month (first 50 TB)", _S3),
    # ApiType=HTTP instead of apigw_request + waf_request (issue 15 item 4): priced beside them
    # by api_per_thousand, never added to the REST total ($0.90/M above 300 M a month).
    "http_api_request": Price(1.00, 1_000_000, "HTTP API request per 512 KB (first 300 M)", _APIGW),
}

# Fixed: per month, whatever the volume.
FIXED: dict[str, Price] = {
    "nat_gateway_hour": Price(0.045, 1, "NAT gateway hour", _VPC),
    "public_ipv4_hour": Price(0.005, 1, "public IPv4 address hour (the Elastic IP)", _VPC),
    "t4g_nano_hour": Price(0.0042, 1, "t4g.nano on-demand hour (Linux)", _EC2),
    "gp3_gb_month": Price(0.08, 1, "gp3 GB-month", _EBS),
    "secret_month": Price(0.40, 1, "secret-month", _SM),
    "waf_acl_month": Price(5.00, 1, "web ACL-month", _WAF),
    "waf_rule_month": Price(1.00, 1, "WAF rule-month", _WAF),
    "alarm_month": Price(0.10, 1, "standard alarm-month", _CW),
    "metric_month": Price(0.30, 1, "custom metric-month (first 10,000)", _CW),
}

# The anchor: what SES charges for the same mail.
SES: dict[str, Price] = {
    "email": Price(0.10, 1_000, "email sent", _SES),
    "byte_out": Price(0.12, GB, "byte of outgoing data (attachments)", _SES),
    "dedicated_ip_month": Price(24.95, 1, "dedicated IP-month (standard)", _SES),
}


def billed_ms(seconds: float) -> int:
    """Lambda's billed duration: rounded up to the next 1 ms, at least 1 ms."""
    return max(1, math.ceil(seconds * 1000 - 1e-9))


def gb_seconds(durations: list[float], memory_mb: int) -> float:
    """GB-seconds of invocations lasting `durations` seconds with `memory_mb` configured."""
    return sum(billed_ms(d) for d in durations) / 1000 * memory_mb / 1024


def sqs_requests(payload_bytes: int) -> int:
    """Billed SQS requests for one API call carrying `payload_bytes`: one per 64 KB chunk."""
    return max(1, math.ceil(payload_bytes / SQS_CHUNK))


def ses_inbound_chunks(message_bytes: int) -> int:
    return max(1, math.ceil(message_bytes / SES_INBOUND_CHUNK))


def byte_months(stored_bytes: float, retention_days: float) -> float:
    """Byte-months of `stored_bytes` kept `retention_days` (a month is 730 hours)."""
    return stored_bytes * retention_days * 24 / HOURS_PER_MONTH


# DynamoDB Local 1.25.1 reports a transactional write at 4 units per KB (probed: a 3.5 KB Put in
# TransactWriteItems reports 16, a one-attribute Update 4; the same Put alone 4); AWS bills 2
# ("transactional write requests require 2 write request units per 1 KB"). Reads agree (a
# transactional 3.5 KB get: 2; strong 1; eventual 0.5), as do plain writes and GSI writes.
LOCAL_UNITS_OVER_AWS = {"TransactWriteItems": 2.0}


def aws_units(operation: str, reported: float) -> float:
    """Units AWS bills for a call DynamoDB Local reported `reported` units for."""
    return reported / LOCAL_UNITS_OVER_AWS.get(operation, 1.0)


def cost_by_kind(usage: Mapping[str, float], prices: Mapping[str, Price] = VARIABLE) -> dict[str, float]:
    """Dollars for each counted kind; a kind without a price is an error, not a silent 0."""
    unknown = set(usage) - set(prices)
    if unknown:
        raise KeyError(f"no price for {sorted(unknown)}")
    return {kind: prices[kind].of(q) for kind, q in usage.items()}


def per_thousand(value: float, emails: int) -> float:
    return value * 1000 / emails


def network_fixed(nat_mode: str) -> dict[str, float]:
    """The sender network's monthly cost: the NAT (gateway, or instance and its disk) and the
    Elastic IP, which is a billed public IPv4 address in both modes."""
    h = HOURS_PER_MONTH
    ip = {"public_ipv4": FIXED["public_ipv4_hour"].of(h)}
    if nat_mode == "gateway":
        return {"nat_gateway": FIXED["nat_gateway_hour"].of(h), **ip}
    if nat_mode == "instance":
        return {"nat_instance": FIXED["t4g_nano_hour"].of(h),
                "nat_instance_disk": FIXED["gp3_gb_month"].of(NAT_INSTANCE_DISK_GB), **ip}
    raise ValueError(f"NatMode is gateway or instance, not {nat_mode!r}")


def ses_per_thousand(bytes_per_thousand: float) -> float:
    """SES's price for 1,000 emails of this total size."""
    return SES["email"].of(1000) + SES["byte_out"].of(bytes_per_thousand)


def break_even(variable_per_1000: float, fixed_month: float, anchor_per_1000: float,
               anchor_fixed_month: float = 0.0) -> float | None:
    """Emails a month from which Outpost costs no more than the anchor: 0.0 if it never costs
    more, None if it always does (its variable price is not below the anchor's)."""
    margin = anchor_per_1000 - variable_per_1000
    extra_fixed = fixed_month - anchor_fixed_month
    if extra_fixed <= 0 and margin >= 0:
        return 0.0
    if margin <= 0:
        return None
    return extra_fixed / margin * 1000


def inline_break_even(retention_days: float = 30, loads: float = 1.0) -> float:
    """Bytes of a stored request at which keeping it in the META item costs what S3 does
    (issue 15 item 4): in DynamoDB each byte is billed at the put (a write unit per KB; the
    META item is written once), for `retention_days` of storage and in each of the sender's
    `loads` (a consistent read unit per 4 KB); in S3 the request costs one PUT, a GET per load
    and cheaper storage. Above this size S3 is cheaper. Latency is not priced (an S3 PUT adds
    ~20-50 ms to the API's answer)."""
    months = retention_days * 24 / HOURS_PER_MONTH
    per_byte_ddb = (VARIABLE["ddb_write_unit"].of(1) / 1024 + VARIABLE["ddb_read_unit"].of(loads) / 4096
                    + VARIABLE["ddb_stored_byte_month"].of(months))
    per_byte_s3 = VARIABLE["s3_stored_byte_month"].of(months)
    fixed_s3 = VARIABLE["s3_put"].of(1) + VARIABLE["s3_get"].of(loads)
    return fixed_s3 / (per_byte_ddb - per_byte_s3)


def http_api_requests(payload_bytes: int) -> int:
    """Billed HTTP API requests for one request carrying `payload_bytes`: one per 512 KB."""
    return max(1, math.ceil(payload_bytes / HTTP_API_CHUNK))


def api_per_thousand(requests: float, http_api_units: float, emails: int) -> dict[str, float]:
    """What the send API's requests cost per 1,000 emails with each ApiType: REST (the REST API
    and the WAF in front of it, both per request) and HTTP (per 512 KB unit, no WAF)."""
    rest = VARIABLE["apigw_request"].of(requests) + VARIABLE["waf_request"].of(requests)
    return {"REST": per_thousand(rest, emails),
            "HTTP": per_thousand(VARIABLE["http_api_request"].of(http_api_units), emails)}
