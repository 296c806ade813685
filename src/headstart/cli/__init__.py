"""The command-line interface: argument parsing and subcommands only."""
