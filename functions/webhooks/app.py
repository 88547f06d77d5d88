"""Webhook deliveries (the delivery queue's event source): POST each connection event, signed, to WebhookUrl."""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth.config import load_webhook_config
from smartsheet_oauth.flows.webhook_delivery import WebhookDelivery
from smartsheet_oauth.platform import aws, snapstart, webhook_http
from smartsheet_oauth.platform.observability import logger, metrics
from smartsheet_oauth.stores.webhook_queue import SigningSecret, SqsDeliveryQueue

CONFIG = load_webhook_config(os.environ)  # a bad configuration fails the cold start, naming the variable
snapstart.register()


@cache
def delivery() -> WebhookDelivery:
    return WebhookDelivery(
        CONFIG.url,
        secret=SigningSecret(
            aws.secretsmanager(), CONFIG.signing_secret_arn, max_age_seconds=CONFIG.secret_max_age_seconds
        ),
        post=webhook_http.post,
        queue=SqsDeliveryQueue(
            aws.sqs(),
            delivery_queue_url=CONFIG.delivery_queue_url,
            dead_letter_queue_url=CONFIG.dead_letter_queue_url,
        ),
        retry_base_seconds=CONFIG.retry_base_seconds,
        retry_max_seconds=CONFIG.retry_max_seconds,
        clock=time.time,
    )


@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return delivery().run(event, time_left=lambda: context.get_remaining_time_in_millis() / 1000)
