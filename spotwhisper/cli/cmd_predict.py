"""``spotwhisper predict <what> SLIDE`` — run a trained model on a slide or AnnData."""

from ._stages import register_group


def register(subparsers) -> None:
    register_group(subparsers, "predict", "predict per spot: expression, proteins, text (see `spotwhisper predict WHAT --help`)")
