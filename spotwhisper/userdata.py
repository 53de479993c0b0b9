"""Where SpotWhisper keeps what a user made when no folder is named: collections, trained models, results.

The user data folder is ``$SPOTWHISPER_HOME``, else ``$XDG_DATA_HOME/spotwhisper``, else
``~/.local/share/spotwhisper``. Package code never writes into the repository checkout or the
installed package by default: a command writes where ``--out`` (or ``--index-dir``) says, else under
this folder, and prints the path it wrote.

====================  ==================================================================
sub-folder            what
====================  ==================================================================
``indexes/``          collections (``spotwhisper index build``; ``configs/index.yaml``)
``models/<name>/``    trained models (``spotwhisper train …`` without ``--out``)
``results/``          evaluation tables (``train … --evaluate``, ``spotwhisper bench …``)
====================  ==================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the user data folder.
USER_DATA_ENV = "SPOTWHISPER_HOME"


def user_data_dir(*parts: str) -> Path:
    """``<user data folder>/<parts…>`` (not created): ``$SPOTWHISPER_HOME``, else
    ``$XDG_DATA_HOME/spotwhisper``, else ``~/.local/share/spotwhisper``."""
    value = os.environ.get(USER_DATA_ENV)
    if value:
        root = Path(value).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "spotwhisper"
    return root.joinpath(*parts)


def models_dir(name: str) -> Path:
    """Default folder of a trained model called ``name`` (``<user data>/models/<name>``)."""
    return user_data_dir("models", name)


def results_dir() -> Path:
    """Default folder of evaluation results (``<user data>/results``)."""
    return user_data_dir("results")


def output_path(value: str | Path) -> Path:
    """Where a result named ``value`` goes: an absolute path as it is, a relative one (a config's
    ``out: zero_shot``) under :func:`results_dir`. Command-line ``--out`` values are made absolute
    (relative to the working directory) before they get here."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else results_dir() / path
