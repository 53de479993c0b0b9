"""``spotwhisper train <what>`` — train a model (expression, text, …) from a config file."""

from ._stages import register_group


def register(subparsers) -> None:
    register_group(subparsers, "train", "train a model: panel, expression, proteins, text, imagetext (see `spotwhisper train WHAT --help`)")
