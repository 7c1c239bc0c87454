"""The studies behind the `pymusicrbm` subcommands: each module has `run(data, out_dir, **options) -> dict` and `add_arguments(parser)`."""
