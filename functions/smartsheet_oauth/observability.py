"""The one Logger and Metrics instance every handler shares (Powertools: JSON logs, EMF metrics)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

SERVICE = "smartsheet-oauth-broker"
NAMESPACE = "SmartsheetOAuthBroker"

# POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE override these defaults in the template.
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
