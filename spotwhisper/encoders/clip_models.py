"""CLIP-style pathology image–text models (PLIP, CONCH) behind one interface.

:class:`ImageTextModel` wraps a torch module and exposes ``preprocess`` (uint8 tiles → tensor),
``encode_image`` / ``encode_text`` (L2-normalised ``(B, D)`` embeddings) and ``logit_scale``.

* **PLIP** (Huang et al., Nat. Med. 2023; hub id ``vinid/plip``): a fine-tuned OpenAI CLIP
  ViT-B/32 in the transformers ``CLIPModel`` layout. Preprocessing as in its public code
  (``PathologyFoundation/plip`` ``reproducibility/embedders/transform.py`` and the hub's
  ``preprocessor_config.json``): bicubic resize of the short side to 224 px, centre crop,
  OpenAI CLIP mean/std. Text: CLIP BPE, 77 tokens.
* **CONCH** (Lu et al., Nat. Med. 2024; ``MahmoodLab/CONCH``): a CoCa model — timm ViT-B/16 at
  448 px with attentional poolers, a 12-layer text tower with an appended CLS token, and a
  multimodal caption decoder (not needed for retrieval). Built in :mod:`.conch_arch` from timm /
  open_clip blocks with the key names and shapes of ``conch/open_clip_custom``. Preprocessing
  (``factory.py``, ``transform.py``): bicubic resize + centre crop to 448 px, OpenAI CLIP mean/std. Text: the byte-level BPE in the
  ``conch`` package (``conch_byte_level_bpe_uncased.json``, ``<pad>`` = 0), 127 tokens padded to
  full length, then the CLS token (context 128).

Getting CONCH weights: the model is gated. Accept its terms on
https://huggingface.co/MahmoodLab/CONCH, download ``pytorch_model.bin`` (``hf auth login``, then
``hf download MahmoodLab/CONCH pytorch_model.bin``), and get the tokenizer JSON from
https://github.com/mahmoodlab/CONCH
(``conch/open_clip_custom/tokenizers/``; or ``pip install git+https://github.com/Mahmoodlab/CONCH``)
— put it beside the checkpoint or pass ``tokenizer=``. Then ``load_conch("path/pytorch_model.bin")``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .conch_arch import ConchArch, ConchModule, conch_checkpoint_shapes
from .runtime import image_batch

log = logging.getLogger(__name__)

#: OpenAI CLIP normalisation (open_clip ``constants.py``; CONCH ``open_clip_custom/constants.py``).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Tokenizer file names looked for beside a CONCH checkpoint (the ``conch`` package name first).
CONCH_TOKENIZER_FILES = ("conch_byte_level_bpe_uncased.json", "tokenizer.json")


class WeightsError(ValueError):
    """Model weights are missing, unreadable or do not match the architecture."""


class ImageTextModel:
    """An image–text model in eval mode: shared interface for PLIP and CONCH.

    Attributes: ``name`` (short model name), ``weights`` (where the weights came from),
    ``embed_dim`` D, ``image_size`` S (px), ``mean``/``std`` (RGB in [0, 1]), ``context_length``
    (text tokens), ``module`` (the torch module), ``device``.
    """

    text_batch_size = 64  #: texts per forward pass in :meth:`encode_text`

    def __init__(
        self,
        name: str,
        module: nn.Module,
        *,
        weights: str,
        embed_dim: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        context_length: int,
        device: str | torch.device = "cpu",
    ):
        self.name, self.weights = name, weights
        self.embed_dim, self.image_size, self.context_length = (int(embed_dim), int(image_size), int(context_length))
        self.mean, self.std = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self._text_lock = threading.Lock()  # fast tokenizers keep padding state per call: one text batch at a time

    # -- hooks the model families fill in --------------------------------------------------
    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def _token_counts(self, texts: list[str]) -> list[int]:
        raise NotImplementedError

    def _logit_scale_param(self) -> torch.Tensor:
        return self.module.logit_scale

    # -- public interface ------------------------------------------------------------------
    @property
    def logit_scale(self) -> float:
        """exp of the learned temperature (CLIP's ``logit_scale``), multiplies cosines into logits."""
        return float(self._logit_scale_param().detach().exp())

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``(B, H, W, 3)`` (or one ``(H, W, 3)``) → normalised float ``(B, 3, S, S)``.

        Bicubic resize of the short side to S (antialiased; skipped when already S×S), centre
        crop, scale to [0, 1], normalise with the model's mean/std.
        """
        x = image_batch(images, self.name)
        s = self.image_size
        if min(x.shape[-2:]) != s:
            x = TF.resize(x, [s], interpolation=InterpolationMode.BICUBIC, antialias=True)
        if tuple(x.shape[-2:]) != (s, s):
            x = TF.center_crop(x, [s, s])
        x = TF.to_dtype(x, torch.float32, scale=True)
        return TF.normalize(x, list(self.mean), list(self.std))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed images ``(B, 3, S, S)`` → L2-normalised embeddings ``(B, D)``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{self.name}: expected a (B, 3, {self.image_size}, {self.image_size}) tensor, got {tuple(x.shape)}"
            )
        with torch.inference_mode():
            feats = self._image_features(x.to(self.device, torch.float32))
        return nn.functional.normalize(feats.float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → L2-normalised embeddings ``(len(texts), D)``.

        Texts longer than ``context_length`` tokens are truncated (a warning is logged).
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"{self.name}: encode_text expects a list of strings")
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.embed_dim)
        with self._text_lock:  # the tokenizer is not thread-safe (the UI's sessions embed queries at once)
            return self._encode_text_locked(texts)

    def _encode_text_locked(self, texts: list[str]) -> torch.Tensor:
        too_long = [t for t, n in zip(texts, self._token_counts(texts)) if n > self.context_length]
        if too_long:
            log.warning(
                "%s: %d text(s) longer than %d tokens were truncated, e.g. %r",
                self.name,
                len(too_long),
                self.context_length,
                too_long[0][:80],
            )
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.text_batch_size):
                out.append(self._text_features(texts[i : i + self.text_batch_size]).float())
        return nn.functional.normalize(torch.cat(out), dim=-1)

    def embed_images(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` → float32 embeddings ``(N, D)`` (preprocess + encode in batches)."""
        out = [
            self.encode_image(self.preprocess(images[i : i + batch_size])).cpu().numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.empty((0, self.embed_dim), np.float32)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, weights={self.weights!r}, D={self.embed_dim}, "
            f"S={self.image_size}, context={self.context_length})"
        )


# ---------------------------------------------------------------------------------------- PLIP
class PlipModel(ImageTextModel):
    """PLIP (or any transformers ``CLIPModel``) with its tokenizer."""

    def __init__(self, module: nn.Module, tokenizer, **kwargs):
        super().__init__(module=module, **kwargs)
        self.tokenizer = tokenizer

    def _image_features(self, x):
        return self.module.visual_projection(self.module.vision_model(pixel_values=x).pooler_output)

    def _token_counts(self, texts):
        return [len(ids) for ids in self.tokenizer(texts)["input_ids"]]

    def _text_features(self, texts):
        # causal mask + pooling at the end-of-text token: padding to the longest text gives the same
        # result as PLIP's padding="max_length" (77), for less work
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt")
        out = self.module.text_model(
            input_ids=enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device)
        )
        return self.module.text_projection(out.pooler_output)


def _looks_like_path(source: str) -> bool:
    return Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def load_plip(source: str = "vinid/plip", *, local_files_only: bool = True, device: str = "cpu") -> ImageTextModel:
    """Load PLIP from a hub id (``vinid/plip``, from the local HF cache unless
    ``local_files_only=False``) or a ``save_pretrained`` folder (config, weights, tokenizer files)."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    src = str(source)
    if _looks_like_path(src):
        folder = Path(src).expanduser()
        if not folder.exists():
            raise FileNotFoundError(f"PLIP folder {folder} does not exist")
        if not (folder / "config.json").is_file():
            raise WeightsError(
                f"{folder}: not a PLIP/CLIP model folder (no config.json); expected the "
                "layout of CLIPModel.save_pretrained with tokenizer files"
            )
        src = str(folder)
    try:
        module = CLIPModel.from_pretrained(src, local_files_only=local_files_only)
        tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        raise WeightsError(
            f"could not load PLIP from {src!r}: {err}\nOn a machine with internet run "
            f"`hf download {source} --local-dir plip` (`huggingface-cli download` before huggingface_hub 1.0; or: "
            "CLIPModel.from_pretrained('vinid/plip').save_pretrained('plip') plus the CLIPProcessor), "
            "then pass that folder."
        ) from err
    if getattr(module.config, "model_type", None) != "clip":
        raise WeightsError(f"{src}: model_type {module.config.model_type!r}, expected a CLIP model")
    try:
        proc = CLIPImageProcessor.from_pretrained(src, local_files_only=local_files_only)
        mean, std = proc.image_mean, proc.image_std
    except (OSError, ValueError):
        log.warning("%s: no preprocessor_config.json; using OpenAI CLIP mean/std", src)
        mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    tcfg = module.config.text_config
    return PlipModel(
        module,
        tokenizer,
        name="plip",
        weights=src,
        embed_dim=module.config.projection_dim,
        image_size=module.config.vision_config.image_size,
        mean=mean,
        std=std,
        context_length=min(tcfg.max_position_embeddings, tokenizer.model_max_length),
        device=device,
    )


# --------------------------------------------------------------------------------------- CONCH
class ConchModel(ImageTextModel):
    """CONCH with its byte-level BPE tokenizer."""

    def __init__(self, module: ConchModule, tokenizer, arch: ConchArch, **kwargs):
        super().__init__(module=module, **kwargs)
        self.tokenizer, self.arch = tokenizer, arch

    def _image_features(self, x):
        return self.module.visual(x)

    def _token_counts(self, texts):
        return [len(ids) + 1 for ids in self.tokenizer(texts)["input_ids"]]  # + the CLS token

    def _text_features(self, texts):
        # CONCH pads every text to 127 tokens: the CLS token's position embedding depends on it
        ids = self.tokenizer(
            texts,
            max_length=self.context_length - 1,
            padding="max_length",
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )["input_ids"]
        return self.module.text(ids.to(self.device))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for non-checkpoint files
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({type(err).__name__}: {err})") from err
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: expected a mapping of parameter names to tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _check_keys(sd: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], path: Path) -> None:
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(
        k for k in set(sd) & set(expected) if tuple(sd[k].shape) != expected[k] and k != "visual.trunk.pos_embed"
    )
    if missing or unexpected or wrong:

        def _list(keys, n=12):
            return ", ".join(keys[:n]) + (f", … ({len(keys)} in all)" if len(keys) > n else "")

        parts = [f"{path}: state dict does not match the CONCH architecture"]
        if missing:
            parts.append(f"missing keys: {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_list(unexpected)}")
        if wrong:
            parts.append("shape mismatch: " + _list([f"{k} {tuple(sd[k].shape)} vs {expected[k]}" for k in wrong]))
        raise WeightsError("\n  ".join(parts))


def _find_conch_tokenizer(checkpoint: Path, tokenizer: str | Path | None) -> Path:
    if tokenizer is not None:
        path = Path(tokenizer).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"CONCH tokenizer file {path} does not exist")
        return path
    candidates = [checkpoint.parent / name for name in CONCH_TOKENIZER_FILES]
    try:  # the official package ships the file
        from conch.open_clip_custom import custom_tokenizer

        candidates.append(Path(custom_tokenizer.TOKENIZER_DIR) / custom_tokenizer.DEFAULT_TOKENIZER)
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no CONCH tokenizer found (looked for {', '.join(str(c) for c in candidates)}); download "
        "conch/open_clip_custom/tokenizers/conch_byte_level_bpe_uncased.json from "
        "https://github.com/mahmoodlab/CONCH next to the checkpoint, or pass tokenizer=PATH"
    )


def load_conch(
    checkpoint: str | Path, *, tokenizer: str | Path | None = None, arch: ConchArch | None = None, device: str = "cpu"
) -> ImageTextModel:
    """Load CONCH from its ``pytorch_model.bin`` (or a folder holding it, or ``.safetensors``).

    Every key of the checkpoint is checked against the full CoCa architecture (names and shapes;
    missing/unexpected keys are listed); the caption pooler and decoder are then dropped, as
    retrieval does not use them. ``arch`` defaults to ``conch_ViT-B-16``.
    """
    from transformers import PreTrainedTokenizerFast

    arch = arch or ConchArch()
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        path = path / "pytorch_model.bin"
    if not path.is_file():
        raise FileNotFoundError(
            f"CONCH checkpoint {path} does not exist; it is gated on Hugging Face "
            "(MahmoodLab/CONCH): accept the terms, download pytorch_model.bin, pass its path"
        )
    tok_path = _find_conch_tokenizer(path, tokenizer)  # before reading 1.6 GB of weights
    sd = _read_state_dict(path)
    _check_keys(sd, conch_checkpoint_shapes(arch), path)
    module = ConchModule(arch)
    own = module.state_dict()
    sd = {k: v for k, v in sd.items() if k in own}
    if sd["visual.trunk.pos_embed"].shape != own["visual.trunk.pos_embed"].shape:  # as CONCH's resize_pos_embed
        from timm.layers import resample_abs_pos_embed

        sd["visual.trunk.pos_embed"] = resample_abs_pos_embed(
            sd["visual.trunk.pos_embed"],
            new_size=module.visual.trunk.patch_embed.grid_size,
            num_prefix_tokens=1,
            interpolation="bilinear",
            antialias=False,
        )
    module.load_state_dict(sd, strict=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tok_path), bos_token="<start_of_text>", eos_token="<end_of_text>", pad_token="<pad>"
    )
    if tok.pad_token_id != arch.pad_id:
        raise WeightsError(f"{tok_path}: <pad> has id {tok.pad_token_id}, CONCH expects {arch.pad_id}")
    if len(tok) > arch.vocab_size:
        raise WeightsError(f"{tok_path}: {len(tok)} tokens but the model embeds only {arch.vocab_size}")
    log.info("CONCH loaded from %s (%s)", path, asdict(arch))
    return ConchModel(
        module,
        tok,
        arch,
        name="conch",
        weights=str(path),
        embed_dim=arch.embed_dim,
        image_size=arch.image_size,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        context_length=arch.context_length,
        device=device,
    )
