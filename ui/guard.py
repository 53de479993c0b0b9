"""The one wrapper every Gradio callback goes through: clean text in, public messages out.

* **Text in.** JSON lets a client send a lone UTF-16 surrogate (``"\\ud800"``); Python decodes it
  into a string that cannot be encoded as UTF-8, so the first answer quoting it breaks Gradio's
  event stream for the session (and the request after it). :func:`clean_text` replaces such code
  points with U+FFFD in every string a callback receives (nested in lists and dicts too).
* **Errors out.** Anything a callback does not handle itself becomes a ``gr.Error`` with a public
  sentence (:func:`~spotwhisper.ui.files.public_error`: no server path), and the traceback goes to
  the server log; ``gr.Error`` raised on purpose passes through unchanged.

Generator callbacks (answers in steps) stay generators, so Gradio still streams them.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable

import gradio as gr

from .files import public_error

log = logging.getLogger(__name__)
_SURROGATE = re.compile("[\ud800-\udfff]")
#: what users see when a callback fails in a way it did not expect (details in the server log)
FAILED = "Something went wrong on the server (it is logged)"


def clean_text(value):
    """``value`` with lone surrogates in every string (also inside lists, tuples and dicts) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    if isinstance(value, tuple):
        return tuple(clean_text(v) for v in value)
    if isinstance(value, dict):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    return value


def _public(err: Exception, where: str) -> gr.Error:
    if isinstance(err, gr.Error):
        return err
    log.exception("%s failed", where)
    said = isinstance(err, (ValueError, KeyError, PermissionError)) and err.args  # errors that explain themselves
    return gr.Error(f"{FAILED}: {public_error(err)}" if said else f"{FAILED}.")


def guarded(fn: Callable) -> Callable:
    """``fn`` with its arguments cleaned (:func:`clean_text`) and its unexpected errors made public."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*clean_text(args), **clean_text(kwargs))
            except Exception as err:  # noqa: BLE001 - every failure gets a public message
                raise _public(err, fn.__name__) from None

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*clean_text(args), **clean_text(kwargs))
        except Exception as err:  # noqa: BLE001 - every failure gets a public message
            raise _public(err, fn.__name__) from None

    return call
