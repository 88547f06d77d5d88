"""The operator's command line (`make admin`, `python -m infra.admin`): connections, refresh, disconnect, health."""
