"""The library the broker's Lambda handlers share: config, Smartsheet client, stores, pages, observability."""
