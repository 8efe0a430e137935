"""Domain check (scheduled): re-verify every sending domain's DNS records; un-verify a domain
whose DKIM record has been gone for 72 h, and move DKIM rotations along."""

from outpost.bootstrap import domain_service
from outpost.telemetry import logger, metrics


@logger().inject_lambda_context
@metrics().m.log_metrics
def lambda_handler(event, context):
    return domain_service().recheck_all(count=metrics().count)
