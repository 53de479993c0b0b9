"""Gradio's streaming diffs, corrected.

When a callback yields several times (the chat's answer comes in steps), Gradio sends every output
after the first as a list of edits against the one before (``gradio.utils.diff``), which the
client — the browser or ``gradio_client`` — applies in order. Gradio's diff renumbers *every* list
deletion in the edit list, nested ones included, as if all were deletions from the outer list, so
when a list of lists shrinks at two levels at once (a map with fewer regions whose outlines have
fewer points) the client deletes the wrong elements: silently wrong outlines in a browser, an
``IndexError`` in ``gradio_client`` (what ``benchmarks/ui_load.py`` hit as failed answers).

:func:`stream_diff` emits a list's own deletions as repeated deletions of the first index past the part
both lists share, which is right whatever is nested inside; :func:`install_stream_diff` puts it in place of
``gradio.utils.diff`` (Gradio calls it through the module, ``gradio/blocks.py``).
"""

from __future__ import annotations


def stream_diff(old, new) -> list[list]:
    """Edits ``[action, path, value]`` (``replace``, ``append``, ``add``, ``delete``) that turn ``old``
    into ``new`` when applied in order (``gradio_client.utils.apply_diff``)."""
    edits: list[list] = []

    def walk(a, b, path: list) -> None:
        if a == b:
            return
        if type(a) is not type(b):
            edits.append(["replace", path, b])
        elif isinstance(a, str) and b.startswith(a):
            edits.append(["append", path, b[len(a):]])
        elif isinstance(a, list):
            common = min(len(a), len(b))
            for i in range(common):
                walk(a[i], b[i], [*path, i])
            edits.extend(["delete", [*path, common], None] for _ in range(common, len(a)))
            edits.extend(["add", [*path, i], b[i]] for i in range(common, len(b)))
        elif isinstance(a, dict):
            for key in a:
                if key in b:
                    walk(a[key], b[key], [*path, key])
                else:
                    edits.append(["delete", [*path, key], None])
            edits.extend(["add", [*path, key], b[key]] for key in b if key not in a)
        else:
            edits.append(["replace", path, b])

    walk(old, new, [])
    return edits


#: the function :func:`install_stream_diff` replaced (Gradio's own), kept for comparison
replaced = None


def install_stream_diff() -> None:
    """Use :func:`stream_diff` for Gradio's streamed outputs (idempotent)."""
    global replaced
    import gradio.utils

    if gradio.utils.diff is not stream_diff:
        replaced, gradio.utils.diff = gradio.utils.diff, stream_diff
