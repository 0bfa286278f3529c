"""One module per `diycnn` subcommand: `add_parser(sub)` declares its arguments beside `run(args)`,
which does the work through the public API. COMMANDS is their order in `diycnn --help`."""

COMMANDS = ("demo", "summary", "train", "backbones", "weights", "predict", "compare", "explain", "export", "evaluate",
            "ui", "cache")
