"""The studies behind the `pymusicrbm` subcommands: each module has `run(data, out_dir, **options) -> dict` and
`add_arguments(parser)`; `_study` holds what they share (options, folds, the results schema), `classifiers` the
classifiers and window voting."""
