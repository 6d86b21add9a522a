"""dfi_daemon: transport, jobs and the dfi CLI."""
