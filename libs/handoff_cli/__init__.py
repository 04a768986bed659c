"""The `handoff` command: one entry point whose subcommands each service and tool adds."""
