"""Where encoder weights come from: local files or folders, Hugging Face hub ids, strict loading.

Used by the backbone loaders (:mod:`.backbones`, :mod:`.clip_backbones`). Nothing is downloaded when
``local_files_only`` is true; a missing file or hub access raises :class:`EncoderWeightsError`
that says how to get the weights.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Weight file names tried, in order, inside a folder or a hub repository.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "checkpoint.pth", "pytorch_model.pth")
HUB_PREFIXES = ("hf-hub:", "hf_hub:")
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pth", ".pt", ".ckpt"}


class EncoderWeightsError(FileNotFoundError):
    """Weights of an encoder are missing, unreachable or do not fit its architecture."""


def is_hub_id(source: str) -> bool:
    """True for ``hf-hub:org/name`` and for ``org/name`` that is not an existing path or weight file."""
    if source.startswith(HUB_PREFIXES):
        return True
    p = Path(source)
    return not p.exists() and p.suffix.lower() not in _WEIGHT_SUFFIXES and bool(re.fullmatch(r"[\w.-]+/[\w.-]+", source))


def strip_hub_prefix(source: str) -> str:
    for prefix in HUB_PREFIXES:
        if source.startswith(prefix):
            return source[len(prefix) :]
    return source


def weights_help(name: str, repo: str, gated: bool, files: tuple[str, ...] = ("pytorch_model.bin",)) -> str:
    """How to obtain the weights of ``name`` (shown when they cannot be found)."""
    steps = []
    if gated:
        steps.append(f"accept the model's terms at https://huggingface.co/{repo} (gated model)")
        steps.append("log in: `hf auth login` (`huggingface-cli login` before huggingface_hub 1.0; or export HF_TOKEN=...)")
    steps.append(f"download on a machine with internet: `hf download {repo} {files[0]} --local-dir DIR`")
    steps.append(f"pass --weights DIR/{files[0]} (or set `weights: {{{name}: DIR/{files[0]}}}` in configs/encoders.yaml)")
    return "; ".join(f"({i}) {s}" for i, s in enumerate(steps, 1))


def file_weights_id(path: Path) -> str:
    """Identify local weights by resolved path, size and modification time."""
    st = path.stat()
    return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def find_weight_file(folder: Path) -> Path:
    """The weight file inside ``folder`` (first of :data:`WEIGHT_FILES` present)."""
    for fname in WEIGHT_FILES:
        if (folder / fname).is_file():
            return folder / fname
    raise EncoderWeightsError(f"{folder}: no weight file in this folder (expected one of {', '.join(WEIGHT_FILES)})")


def download_hub_file(repo: str, local_files_only: bool, help_text: str, files: tuple[str, ...] = WEIGHT_FILES) -> Path:
    """Fetch the first of ``files`` that ``repo`` has (from the local HF cache when ``local_files_only``)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    reason = "not in the local Hugging Face cache" if local_files_only else "not found"
    for fname in files:
        try:
            return Path(hf_hub_download(repo, fname, local_files_only=local_files_only))
        except GatedRepoError as err:
            raise EncoderWeightsError(f"{repo} is gated and this account has no access ({err}). {help_text}") from err
        except RepositoryNotFoundError as err:
            raise EncoderWeightsError(f"{repo}: repository not found or not accessible without login. {help_text}") from err
        except LocalEntryNotFoundError as err:  # not cached, and (offline or no network) — say why
            if not local_files_only:
                reason = f"not cached and not downloadable ({err})"
            continue
        except EntryNotFoundError:
            continue
        except (HfHubHTTPError, OSError, ValueError) as err:  # no network, proxy, bad token …
            raise EncoderWeightsError(f"{repo}: cannot reach the Hugging Face hub ({err}). {help_text}") from err
    raise EncoderWeightsError(f"{repo}: none of {', '.join(files)} {reason}. {help_text}")


def resolve_weight_file(source: str, *, local_files_only: bool, help_text: str) -> tuple[Path, str]:
    """A weight file from a local file, a folder holding one, or a hub id → ``(path, weights_id)``."""
    if is_hub_id(source):
        repo = strip_hub_prefix(source)
        path = download_hub_file(repo, local_files_only, help_text)
        # hub cache layout: .../snapshots/<commit>/<file>
        return path, f"hf-hub:{repo}@{path.parent.name}/{path.name}"
    p = Path(source).expanduser()
    if not p.exists():
        raise EncoderWeightsError(f"{p}: no such weight file or folder (and not a hub id like org/name). {help_text}")
    if p.is_dir():
        p = find_weight_file(p)
    return p, file_weights_id(p)


# ---------------------------------------------------------------- state dicts


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or torch checkpoint; unwraps ``{"state_dict"|"model": …}`` and ``module.``."""
    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle of arbitrary objects …
        raise EncoderWeightsError(f"{p}: not a readable weight file ({err})") from err
    while isinstance(sd, dict) and len(sd) <= 3 and any(k in sd for k in ("state_dict", "model")):
        sd = sd.get("state_dict", sd.get("model"))
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EncoderWeightsError(f"{p}: expected a state dict (parameter name → tensor)")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with an error that lists what does not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {wrong[0]}: {tuple(state_dict[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})")
        raise EncoderWeightsError(f"{source}: weights do not fit {type(model).__name__}: {'; '.join(parts)}")
    model.load_state_dict(state_dict, strict=True, assign=assign)


def build_with_weights(build: Callable[[], nn.Module], state_dict: dict[str, torch.Tensor], source: str) -> nn.Module:
    """``build()`` the architecture without initialising it (meta device) and load ``state_dict`` into it.

    Skips the random initialisation of large models (a ViT-g has 1.1 B parameters); falls back to
    an ordinary build when a tensor is left on the meta device. Weights become float32.
    """
    sd = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    with torch.device("meta"):
        model = build()
    load_strict(model, sd, source, assign=True)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        model = build()
        load_strict(model, sd, source)
    return model.eval()
