"""Command-line options shared by every command that builds models."""
from __future__ import annotations

import argparse


def add_import_option(parser: argparse.ArgumentParser) -> None:
    """``--import``: the same option on every command that builds models."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="import a module (a name, or a path to a .py file) that registers models with "
                             "models.register_model, before anything else (repeatable)")


def import_or_exit(parser: argparse.ArgumentParser, imports: list[str]) -> None:
    """Import the ``--import`` items, or exit with the parser's error (status 2) naming the one that failed."""
    import models
    try:
        models.import_models(imports, via="--import", reload=True)
    except models.ModelImportError as err:
        parser.error(str(err))
