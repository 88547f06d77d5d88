"""WebhookDeliveryFunction: signed webhook deliveries."""
