"""The HTTP edge: routing of API Gateway events, the pages, and the two resolvers (public pages, management API)."""
