"""The e2e suite's local stack: the `stack`, `local_stack` and `client` fixtures live in tests/support/fixtures.py
(shared with tests/security)."""
