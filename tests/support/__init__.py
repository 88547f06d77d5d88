"""Test helpers: event builders, Lambda contexts, the broker under test."""
