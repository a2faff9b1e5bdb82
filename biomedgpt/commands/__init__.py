"""CLI subcommand implementations; each module: add_arguments(parser) and run(args) -> int."""
