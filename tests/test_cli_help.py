"""The command line starts fast and fails loudly: no heavy library at ``--help``, no silently
missing command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["torch", "scanpy", "anndata", "faiss", "gradio", "transformers", "timm", "ray"]


def test_help_of_every_command_imports_no_heavy_library():
    code = (
        "import json, sys\n"
        "from spotwhisper.cli import build_parser\n"
        "parser = build_parser()\n"
        "for cmd in ([], ['index', 'build'], ['features', 'extract'], ['predict', 'proteins'], ['train', 'text'],\n"
        "            ['bench', 'zero-shot'], ['serve'], ['search'], ['demo'], ['tiles', 'preview']):\n"
        "    try:\n"
        "        parser.parse_args([*cmd, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []


@pytest.mark.parametrize("module", ["cmd_tiles", "stage_text"])
def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch, module):
    import spotwhisper.cli as cli

    monkeypatch.setitem(sys.modules, f"spotwhisper.cli.{module}", None)  # importing it raises ImportError
    monkeypatch.delattr(cli, module, raising=False)
    with pytest.raises(ImportError, match=module):
        cli.build_parser()
