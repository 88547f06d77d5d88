"""What runs under every function: the AWS clients, logs and metrics, SnapStart hooks."""
