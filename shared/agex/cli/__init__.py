"""The `agex` command: a client of the HTTP API (runs, events, approvals) and the entry to `agex dev`, `agex new`
and `agex demo`."""
