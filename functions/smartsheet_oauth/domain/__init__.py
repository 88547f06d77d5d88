"""The broker's words: connection statuses, refresh outcomes, event types, the errors."""
