"""Smartsheet's OAuth API as the broker uses it."""
