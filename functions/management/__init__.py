"""ManagementFunction: the IAM-authorized management API (connections, refresh, disconnect, connect sessions)."""
