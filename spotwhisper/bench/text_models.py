"""Leakage-safe transcriptome–text models for label-based evaluation, one per held-out patient.

The shipped text model was trained on the annotations (pathologist labels, cluster captions,
deconvolution captions) of her2st patients D–H (its ``train_patients``). Scoring a section of one
of them with it would test the model on its own training captions. :class:`TextModels` therefore
hands out, per patient, a model that never saw that patient: the shipped model for every patient
it was not trained on (B, C) and user data (``patient=None``), and a leave-one-patient-out (LOPO)
model — trained with ``configs/text.yaml`` on every other patient, exactly as ``spotwhisper train
text --cv`` does — for the rest. With a held-out *concept* (:meth:`TextModels.for_patient`), the
model is trained on the same patients with every caption naming the concept removed, for zero-shot
recognition; those are cached under ``<cache>/text-heldout/<key>/<shipped|patient>/<concept>/`` with
the list of their training captions. LOPO models are cached on disk
under ``<cache>/text-lopo/<key>/<patient>/`` where ``<key>`` hashes the text config, the gene panel,
the training sections and the content of their files, the frozen text encoder (settings and
weights), the vocabulary the captions name and the code that writes captions and trains
(:data:`LOPO_CODE`), so reruns load them in a second and nothing stale is reused.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import anndata as ad

from .. import keys
from ..cache import cache_dir, cache_key, code_fingerprint, file_fingerprint
from ..config import to_dict
from ..language.config import TextConfig
from ..language.heldout import Concept, captions_naming
from ..language.model import CONFIG_FILE, TextExpressionModel

log = logging.getLogger(__name__)

def bench_cache_dir() -> Path:
    """``<cache root>/bench`` (see :mod:`spotwhisper.cache`)."""
    return cache_dir("bench")


#: file beside a held-out-concept model listing every caption it was trained on (one per line)
TRAIN_CAPTIONS = "train_captions.txt"

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

    ``data_dir`` is needed only when a model has to be trained (a LOPO model about 1–2 minutes on one
    core, a held-out-concept model 10–30 s once the sections are read); ``shipped`` defaults to the
    shipped model.
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
        self._captions: dict[tuple[str, ...], list] = {}  #: training patients → their spots' captions
        self.used: dict[str, str] = {}  #: patient → description of the model that scored it

    @property
    def shipped_train(self) -> set[str]:
        """Patients the shipped model was trained on (every other patient it never saw)."""
        return set(map(str, self.shipped.meta.get("train_patients", [])))

    def uses_shipped(self, patient: str | None) -> bool:
        """True when ``patient`` (``None`` = user data) is scored by the shipped model, which never saw it."""
        if not self.shipped_train and patient is not None:
            raise RuntimeError("the shipped text model does not record its training patients: cannot score her2st safely")
        return patient is None or patient not in self.shipped_train

    def for_patient(self, patient: str | None, concept: Concept | None = None) -> TextExpressionModel:
        """The model to score ``patient``'s spots with (``None`` = data the shipped model never saw):
        the shipped model or a leave-one-patient-out model; with ``concept``, the same training
        patients but every caption naming the concept left out (see :meth:`_heldout`)."""
        if concept is not None:
            return self._heldout(patient, concept)
        if self.uses_shipped(patient):
            trained = ", ".join(sorted(self.shipped_train)) or "unknown patients"
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

    def _folder(self, patient: str, genes: list[str], kind: str = "text-lopo") -> Path:
        from ..io import list_sections, sections_fingerprint

        sections = list(self.cfg.split.sections or list_sections(self.data_dir))
        key = fold_key(self.cfg, genes, sections, sections_fingerprint(self.data_dir, sections),
                       self.shipped.text_encoder.fingerprint())
        return self.cache_dir / kind / key / patient

    def _train_patients(self, patient: str | None) -> list[str]:
        """Patients the transfer model of ``patient`` was trained on."""
        if self.uses_shipped(patient):
            return sorted(self.shipped_train)
        patients = set(self._sections().obs[keys.PATIENT].astype(str))
        if patient not in patients:
            raise ValueError(f"patient {patient!r} is not in the her2st data at {self.data_dir}")
        return sorted(patients - {patient})

    def training_captions(self, patient: str | None) -> list[list]:
        """Captions of the spots the transfer model of ``patient`` was trained on (made once per patient set)."""
        train = tuple(self._train_patients(patient))
        if train not in self._captions:
            from ..io import tls_signature
            from ..language.train import caption_subset

            adata = self._train_data(train)
            self._captions[train] = caption_subset(adata, self.cfg, self._genes(), tls_signature(self.data_dir),
                                                   with_labels=True)
        return self._captions[train]

    def training_texts(self, patient: str | None) -> set[str]:
        """Every caption text the transfer model of ``patient`` read in training."""
        return {c.text for caps in self.training_captions(patient) for c in caps}

    def _train_data(self, train: tuple[str, ...]) -> ad.AnnData:
        adata = self._sections()
        return adata[adata.obs[keys.PATIENT].astype(str).isin(train).to_numpy()].copy()

    def _genes(self) -> list[str]:
        from ..genes import load_panel

        return load_panel(self.cfg.panel)

    def _heldout(self, patient: str | None, concept: Concept) -> TextExpressionModel:
        """A model trained on the same patients as ``patient``'s transfer model with every caption naming
        ``concept`` removed; cached under ``<cache>/text-heldout/<key>/<shipped|patient>/<concept>/`` with the
        list of its training captions, which is checked on every load (none may name the concept)."""
        tag = "shipped" if self.uses_shipped(patient) else str(patient)
        memo = (tag, concept.name, tuple(concept.patterns))
        if memo in self._models:
            return self._models[memo]
        slug = re.sub(r"[^0-9a-z]+", "-", concept.name.lower()).strip("-")
        folder = self._folder(tag, self._genes(), "text-heldout") / f"{slug}-{cache_key(concept.patterns)[:8]}"
        if not (folder / CONFIG_FILE).exists():
            self._train_heldout(patient, concept, folder)
        model = TextExpressionModel.from_pretrained(folder)
        model.set_text_encoder(self.shipped.text_encoder)
        leaked = captions_naming((folder / TRAIN_CAPTIONS).read_text().splitlines(), concept)
        if model.meta.get("heldout_concept") != concept.name or leaked:
            raise RuntimeError(f"{folder}: not a model without concept {concept.name!r} (captions naming it: {leaked[:3]})")
        who = "user data" if patient is None else patient
        self.used[f"{who}, without '{concept.name}'"] = (
            f"trained on patients {', '.join(model.meta.get('train_patients', []))} without the "
            f"{model.meta.get('removed_captions')} captions naming '{concept.name}' (cache key {folder.parent.parent.name})")
        self._models[memo] = model
        return model

    def _train_heldout(self, patient: str | None, concept: Concept, folder: Path) -> None:
        import torch

        from ..atomic import atomic_file
        from ..io import tls_signature
        from ..language.train import fit_and_evaluate

        train = tuple(self._train_patients(patient))
        adata = self._train_data(train)
        log.info("training a text model without concept %r on patients %s (cached in %s)", concept.name, train, folder)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.cfg.train.threads)
        try:
            fold = fit_and_evaluate(adata, self.cfg, [], self.shipped.text_encoder, genes=self._genes(),
                                    tls=tls_signature(self.data_dir), progress=self.progress, concept=concept,
                                    captions=self.training_captions(patient), evaluate=False)
        finally:
            torch.set_num_threads(threads)
        present = sorted(set(adata.obs[keys.PATIENT].astype(str)))
        fold.model.save_pretrained(folder, extra={
            "train_patients": present, "test_patients": [] if patient is None else [patient],
            "heldout_concept": concept.name, "heldout_patterns": list(concept.patterns),
            "removed_captions": fold.removed_captions})
        with atomic_file(folder / TRAIN_CAPTIONS) as tmp:
            tmp.write_text("\n".join(fold.train_texts) + "\n")

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


