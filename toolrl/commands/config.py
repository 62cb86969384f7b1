"""`toolrl config show RECIPE [section.key=value ...]`: print the resolved configuration."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="inspect recipes and configuration")
    commands = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = commands.add_parser(
        "show",
        help="print the resolved config: defaults, then the recipe, then the overrides",
        description="Print the resolved configuration as YAML. Unknown keys and wrong types fail.",
    )
    show.add_argument(
        "recipe", nargs="?", help="recipe path or name in recipes/ (default: the paper's defaults)"
    )
    show.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. algorithm.clip_ratio_high=0.315"
    )
    show.set_defaults(handler=show_config)


def show_config(args: argparse.Namespace) -> int:
    from toolrl.config import ConfigError, load_config

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe:  # only overrides were given
        recipe, overrides = None, [recipe, *overrides]
    try:
        config = load_config(recipe, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(config.to_yaml())
    return 0
