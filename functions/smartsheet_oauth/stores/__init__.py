"""Where the broker keeps things: DynamoDB (states, connections, pace, leases), Secrets Manager, EventBridge."""
