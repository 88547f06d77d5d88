"""Security properties of the broker, each a test (issue 5; RFC 9700 map in notes)."""
