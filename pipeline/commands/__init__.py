"""One module per ``pamtri`` subcommand group; each exposes ``register(subparsers)``.

Modules import heavy libraries inside their handlers so that ``pamtri --help`` stays fast.
"""
