"""AuthorizeFunction: GET /login."""
