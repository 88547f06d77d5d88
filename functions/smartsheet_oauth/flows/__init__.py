"""What the broker does, step by step: sign-in, connect sessions, refresh, the sweep, management."""
