"""One module per ``pamtri`` subcommand group; each exposes ``register(subparsers)``.

Handlers are named ``cmd_<group>_<action>`` (``cmd_<group>`` for a group without actions). Each parses its
arguments, calls one library function and prints the outcome; errors are raised (``common.errors``) and
printed as one line by ``pipeline.cli.main``. Modules import heavy libraries inside their handlers so that
``pamtri --help`` stays fast.
"""
