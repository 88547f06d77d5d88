"""RefreshFunction: the scheduled refresh sweep."""
