"""The transcriptome–text dual encoder (CellWhisperer idea, CLIP training).

Expression tower + projection head and a frozen sentence encoder + projection head map a spot and a
sentence into one space of dimension ``D``; their similarity is the cosine times
``exp(logit_scale)``, a learnable inverse temperature initialised at 1/0.07 and clamped (CLIP).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_dir
from ..config import from_dict, to_dict
from .config import ModelConfig
from .expression_encoder import build_expression_encoder, expression_input
from .text_encoder import TextEncoder

#: The shipped default model (``spotwhisper/pretrained/text-default``).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "text-default"
CONFIG_FILE = "config.json"
_TEXT_ENCODER_LOCK = threading.Lock()  # a server's concurrent first queries load the sentence encoder once
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP cross-entropy of ``logits`` ``(B, B)`` (rows: spots, columns: their captions).

    Several spots of a batch often carry the same caption text. Their caption columns are then
    identical, and this loss equals the multi-positive form (all equal captions counted as
    positives): splitting the target over tied columns changes neither the value nor the gradient.
    """
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class TextExpressionModel(nn.Module):
    """Dual encoder over a fixed gene panel ``genes``; the text tower (frozen) loads on first use."""

    def __init__(self, genes: Sequence[str], config: ModelConfig | None = None, text_dim: int = 384) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.genes = list(genes)
        self.text_dim = int(text_dim)
        d = self.config.embed_dim
        self.expression_encoder = build_expression_encoder(len(self.genes), self.config.expression)
        self.expression_head = nn.Linear(self.expression_encoder.out_dim, d)
        h = self.config.text_head_hidden
        self.text_head = (
            nn.Sequential(nn.Linear(self.text_dim, h), nn.GELU(), nn.Linear(h, d)) if h else nn.Linear(self.text_dim, d)
        )
        self.log_logit_scale = nn.Parameter(torch.tensor(float(self.config.logit_scale_init)))
        self._text_encoder: TextEncoder | None = None
        self.meta: dict = {}  #: provenance read from a saved model (train/test patients, …)
        self.eval()

    # -- temperature ---------------------------------------------------------------------------
    def clamp_logit_scale(self) -> None:
        """Keep the log inverse temperature in ``[0, logit_scale_max]`` (call after each step)."""
        with torch.no_grad():
            self.log_logit_scale.clamp_(0.0, self.config.logit_scale_max)

    @property
    def logit_scale(self) -> float:
        """The inverse temperature ``exp(log_logit_scale)`` (clamped), multiplying cosines."""
        return float(self.log_logit_scale.detach().clamp(0.0, self.config.logit_scale_max).exp())

    # -- towers --------------------------------------------------------------------------------
    @property
    def text_encoder(self) -> TextEncoder:
        """The frozen sentence encoder named in the config (loaded once, keeps a query cache)."""
        if self._text_encoder is None:
            with _TEXT_ENCODER_LOCK:
                if self._text_encoder is None:
                    encoder = TextEncoder(self.config.text)
                    if encoder.dim != self.text_dim:
                        raise ValueError(
                            f"text encoder {self.config.text.name!r} gives {encoder.dim}-d embeddings, "
                            f"this model's text head expects {self.text_dim}"
                        )
                    self._text_encoder = encoder
        return self._text_encoder

    def set_text_encoder(self, encoder: TextEncoder) -> None:
        """Share an already-loaded text encoder (and its cache) with this model."""
        if encoder.dim != self.text_dim:
            raise ValueError(f"text encoder gives {encoder.dim}-d embeddings, expected {self.text_dim}")
        self._text_encoder = encoder

    def project_expression(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised panel input ``(n, G)`` → L2-normalised ``(n, D)``."""
        return F.normalize(self.expression_head(self.expression_encoder(x)), dim=-1)

    def project_text(self, emb: torch.Tensor) -> torch.Tensor:
        """Sentence-encoder embeddings ``(m, text_dim)`` → L2-normalised ``(m, D)``."""
        return F.normalize(self.text_head(emb), dim=-1)

    def forward(self, x: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, m)`` = cosine × logit scale between spots ``x`` and sentence embeddings."""
        scale = self.log_logit_scale.clamp(0.0, self.config.logit_scale_max).exp()
        return scale * self.project_expression(x) @ self.project_text(text_emb).T

    @torch.no_grad()
    def encode_expression(
        self, data: ad.AnnData | np.ndarray, groups: np.ndarray | None = None, batch_size: int = 4096
    ) -> np.ndarray:
        """Spot embeddings ``(n, D)`` float32, L2-normalised, from an AnnData or a log1p panel matrix
        (see :func:`~spotwhisper.language.expression_encoder.expression_input`)."""
        was_training = self.training
        self.eval()
        x = expression_input(data, self.genes, self.config.input, groups=groups)
        out = [
            self.project_expression(torch.from_numpy(x[s : s + batch_size])).numpy()
            for s in range(0, len(x), batch_size)
        ]
        self.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.config.embed_dim), np.float32)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embeddings in the shared space ``(m, D)`` float32, L2-normalised."""
        was_training = self.training
        self.eval()
        emb = torch.from_numpy(self.text_encoder.encode(list(texts)))
        out = self.project_text(emb).numpy()
        self.train(was_training)
        return out

    def fingerprint(self) -> str:
        """Short hash of the weights and settings: tells whether stored embeddings came from this model."""
        h = hashlib.sha1(json.dumps(to_dict(self.config), sort_keys=True).encode())
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # -- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write ``config.json`` (config, genes, provenance ``extra``) and ``model.safetensors``
        into folder ``path``; the folder is replaced as a whole, never left half-written."""
        path = Path(path)
        others = tuple(p.name for p in path.glob("*")) if path.is_dir() else ()  # keep files others put there
        with atomic_dir(path, keep=others) as tmp:
            meta = {
                "format_version": FORMAT_VERSION,
                "model": to_dict(self.config),
                "text_dim": self.text_dim,
                "genes": self.genes,
                **(extra or {}),
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
            state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> TextExpressionModel:
        """Load a saved model (``None`` → the shipped default, trained on her2st)."""
        path = Path(path) if path is not None else DEFAULT_MODEL_DIR
        cfg_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not cfg_file.exists() or not weights.exists():
            raise FileNotFoundError(
                f"{path}: not a saved text model (needs {CONFIG_FILE} and {WEIGHTS_FILE}; "
                "train one with `spotwhisper train text`)"
            )
        meta = json.loads(cfg_file.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{cfg_file}: format version {meta.get('format_version')}, expected {FORMAT_VERSION}")
        model = cls(meta["genes"], from_dict(ModelConfig, meta["model"]), text_dim=meta["text_dim"])
        model.load_state_dict(load_file(str(weights)))
        model.meta = {k: v for k, v in meta.items() if k not in {"model", "genes"}}
        model.eval()
        return model
