"""Leakage-safe transcriptome–text models for label-based evaluation, one per held-out patient.

The shipped text model was trained on the annotations (pathologist labels, cluster captions,
deconvolution captions) of every her2st patient except the ones in its ``test_patients``
(patient C). Scoring a section of another patient with it would test the model on its own
training captions. :class:`TextModels` therefore hands out, per patient, a model that never saw
that patient: the shipped model for its held-out patients and user data (``patient=None``), and a
leave-one-patient-out (LOPO) model — trained with ``configs/text.yaml`` on every other patient,
exactly as ``spotwhisper train text --cv`` does — for the rest. LOPO models are cached on disk
under ``<cache>/text-lopo/<key>/<patient>/`` where ``<key>`` hashes the text config, the gene panel,
the training sections and the content of their files, the frozen text encoder (settings and
weights), the vocabulary the captions name and the code that writes captions and trains
(:data:`LOPO_CODE`), so reruns load them in a second and nothing stale is reused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad

from .. import keys
from ..cache import cache_dir, cache_key, code_fingerprint, file_fingerprint
from ..config import to_dict
from ..language.config import TextConfig
from ..language.model import CONFIG_FILE, TextExpressionModel

log = logging.getLogger(__name__)

def bench_cache_dir() -> Path:
    """``<cache root>/bench`` (see :mod:`spotwhisper.cache`)."""
    return cache_dir("bench")


#: code whose change changes a LOPO model: captions, the text model and its training, panel, vocabulary, reading
LOPO_CODE = ("spotwhisper.language", "spotwhisper.genes", "spotwhisper.prompts", "spotwhisper.io.her2st")


def fold_key(cfg: TextConfig, genes: list[str], sections: list[str], data: str, text_encoder: str) -> str:
    """16-hex key of a LOPO model: text config (without its cache folder), panel genes, sections,
    ``data`` (content fingerprint of the sections' files), ``text_encoder`` (its fingerprint), the
    vocabulary file and the code (:data:`LOPO_CODE`)."""
    from ..config import resolve_config_path

    conf = to_dict(cfg)
    conf.pop("cache_dir", None)
    return cache_key("text-lopo", conf, list(genes), sorted(sections), data, text_encoder,
                     file_fingerprint(resolve_config_path("vocabulary")), code_fingerprint(*LOPO_CODE))


class TextModels:
    """Per-patient text models that never saw the patient they score (see the module docstring).

    ``data_dir`` is needed only when a LOPO model has to be trained (about 2 minutes per patient
    on one core); ``shipped`` defaults to the shipped model.
    """

    def __init__(
        self,
        data_dir: str | Path | None,
        cfg: TextConfig,
        *,
        shipped: TextExpressionModel | None = None,
        cache_dir: Path | None = None,
        progress: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.cfg = cfg
        self.shipped = shipped if shipped is not None else TextExpressionModel.from_pretrained()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else bench_cache_dir()
        self.progress = progress
        self._models: dict[str, TextExpressionModel] = {}
        self._all: ad.AnnData | None = None
        self.used: dict[str, str] = {}  #: patient → description of the model that scored it

    @property
    def shipped_held_out(self) -> set[str]:
        """Patients the shipped model never saw."""
        return set(map(str, self.shipped.meta.get("test_patients", [])))

    def for_patient(self, patient: str | None) -> TextExpressionModel:
        """The model to score ``patient``'s spots with (``None`` = data the shipped model never saw)."""
        if patient is None or patient in self.shipped_held_out:
            trained = ", ".join(map(str, self.shipped.meta.get("train_patients", []))) or "unknown patients"
            self.used["user data" if patient is None else patient] = f"shipped text-default (trained on her2st {trained})"
            return self.shipped
        if patient not in self._models:
            self._models[patient] = self._load_or_train(patient)
        return self._models[patient]

    # -- LOPO models ---------------------------------------------------------------------------
    def _sections(self) -> ad.AnnData:
        if self._all is None:
            from ..language.train import load_sections

            self._all = load_sections(self.data_dir, self.cfg.split.sections)
        return self._all

    def _folder(self, patient: str, genes: list[str]) -> Path:
        from ..io import list_sections, sections_fingerprint

        sections = list(self.cfg.split.sections or list_sections(self.data_dir))
        key = fold_key(self.cfg, genes, sections, sections_fingerprint(self.data_dir, sections),
                       self.shipped.text_encoder.fingerprint())
        return self.cache_dir / "text-lopo" / key / patient

    def _load_or_train(self, patient: str) -> TextExpressionModel:
        from ..genes import load_panel

        genes = load_panel(self.cfg.panel)
        folder = self._folder(patient, genes)
        if (folder / CONFIG_FILE).exists():
            log.info("LOPO text model for patient %s from %s", patient, folder)
            self.used[patient] = f"leave-one-patient-out model without patient {patient} (cache key {folder.parent.name})"
            model = TextExpressionModel.from_pretrained(folder)
            model.set_text_encoder(self.shipped.text_encoder)
            return model
        import torch

        from ..io import tls_signature
        from ..language.train import fit_and_evaluate

        adata = self._sections()
        patients = adata.obs[keys.PATIENT].astype(str).to_numpy()
        if patient not in set(patients):
            raise ValueError(f"patient {patient!r} is not in the her2st data at {self.data_dir}")
        log.info("training the LOPO text model without patient %s (cached afterwards in %s)", patient, folder)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.cfg.train.threads)
        try:
            encoder = self.shipped.text_encoder
            train = adata[patients != patient].copy()
            fold = fit_and_evaluate(
                train, self.cfg, [patient], encoder, genes=genes, tls=tls_signature(self.data_dir), progress=self.progress
            )
        finally:
            torch.set_num_threads(threads)
        train_patients = sorted(set(patients) - {patient})
        fold.model.save_pretrained(folder, extra={"train_patients": train_patients, "test_patients": [patient]})
        self.used[patient] = f"leave-one-patient-out model without patient {patient} (cache key {folder.parent.name})"
        model = TextExpressionModel.from_pretrained(folder)
        model.set_text_encoder(encoder)
        return model

    def warm(self, patients: list[str]) -> None:
        """Load or train the models of ``patients`` now (so a long run fails early, not midway)."""
        for p in dict.fromkeys(patients):
            self.for_patient(p)


def held_out_check(model: TextExpressionModel, patient: str | None) -> None:
    """Raise if ``model`` was trained on ``patient`` (a guard against label leakage)."""
    if patient is None:
        return
    train = set(map(str, model.meta.get("train_patients", [])))
    if patient in train:
        raise RuntimeError(f"text model was trained on patient {patient}: scoring its labels would leak")


