"""The one Logger and Metrics instance every handler shares (Powertools: JSON logs, EMF metrics)."""

from __future__ import annotations

import logging
import os

from aws_lambda_powertools import Logger, Metrics

SERVICE = "smartsheet-oauth-broker"
NAMESPACE = "SmartsheetOAuthBroker"

# POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE (set in template.yaml) win over these defaults.
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE)
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE,
    service=os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE,
)

# botocore's wire logs dump whole request and response bodies at DEBUG: token secrets, the app credentials.
# Keep them quiet whatever level the Lambda runtime gives the root logger (ApplicationLogLevel=DEBUG).
for _wire_log in ("botocore.endpoint", "botocore.parsers"):
    logging.getLogger(_wire_log).setLevel(logging.INFO)
