"""The 50-marker ROSIE panel: names in model order, synonyms, and the curated marker → gene map.

The curated entries live in ``spotwhisper/resources/protein_panel.yaml`` (one line of rationale per
marker); :func:`load_protein_panel` reads them into :class:`Marker` dataclasses and checks them
against :data:`ROSIE_MARKERS`, the output order of the ROSIE model.

Name lookup (:func:`find_marker`, :func:`find_markers_in`) ignores case, punctuation and spaces and
reads Greek α/β/γ as a/b/g, so "PD-L1", "PDL1", "pd l1" and "CD274" all give ``"PDL1"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

#: The ROSIE output channels, in order (Wu et al. 2025, model card of ``ericwu09/ROSIE``).
ROSIE_MARKERS: tuple[str, ...] = (
    "DAPI", "CD45", "CD68", "CD14", "PD1", "FoxP3", "CD8", "HLA-DR", "PanCK", "CD3e",
    "CD4", "aSMA", "CD31", "Vimentin", "CD45RO", "Ki67", "CD20", "CD11c", "Podoplanin", "PDL1",
    "GranzymeB", "CD38", "CD141", "CD21", "CD163", "BCL2", "LAG3", "EpCAM", "CD44", "ICOS",
    "GATA3", "Gal3", "CD39", "CD34", "TIGIT", "ECad", "CD40", "VISTA", "HLA-A", "MPO",
    "PCNA", "ATM", "TP63", "IFNg", "Keratin8/18", "IDO1", "CD79a", "HLA-E", "CollagenIV", "CD66",
)  # fmt: skip

DEFAULT_PANEL_FILE = Path(__file__).resolve().parent.parent / "resources" / "protein_panel.yaml"
#: longest synonym, in words, that :func:`find_markers_in` looks for
_MAX_NGRAM = 6
_GREEK = str.maketrans({"α": "a", "β": "b", "γ": "g", "κ": "k"})


class ProteinPanelError(ValueError):
    """The curated panel file is inconsistent, or a marker name is unknown."""


@dataclass(frozen=True)
class Marker:
    """One protein marker of the panel and its transcript proxy."""

    name: str
    description: str
    synonyms: tuple[str, ...]
    genes: tuple[str, ...]
    has_proxy: bool
    rationale: str
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """The panel name followed by its synonyms."""
        return (self.name, *self.synonyms)

    def weight(self, gene: str) -> float:
        return float(self.weights.get(gene, 1.0))


@dataclass(frozen=True)
class ProteinPanel:
    """The markers in ROSIE order plus gene aliases (official symbol → older symbols)."""

    markers: tuple[Marker, ...]
    gene_aliases: dict[str, tuple[str, ...]]
    source: str = ""

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.markers]

    def __len__(self) -> int:
        return len(self.markers)

    def __getitem__(self, name: str) -> Marker:
        for m in self.markers:
            if m.name == name:
                return m
        raise ProteinPanelError(f"unknown marker {name!r}; the panel has {self.names}")

    def index(self, name: str) -> int:
        """Channel index of marker ``name`` (0-based, ROSIE order)."""
        return self.names.index(self[name].name)

    @property
    def without_proxy(self) -> list[str]:
        """Markers with no fair transcript proxy (NaN in route B)."""
        return [m.name for m in self.markers if not m.has_proxy]

    def proxy_genes(self, with_aliases: bool = False) -> list[str]:
        """Every gene symbol the map uses, in panel order, without repeats (optionally with aliases)."""
        genes: dict[str, None] = {}
        for m in self.markers:
            for g in m.genes:
                genes[g] = None
                if with_aliases:
                    genes.update(dict.fromkeys(self.gene_aliases.get(g, ())))
        return list(genes)


def compact_key(text: str) -> str:
    """Lookup key: lower case, Greek letters to Latin, everything but letters and digits dropped."""
    return re.sub(r"[^0-9a-z]+", "", text.lower().translate(_GREEK))


def _marker_from_dict(spec: dict, where: str) -> Marker:
    known = {"name", "description", "synonyms", "genes", "weights", "has_proxy", "rationale"}
    unknown = set(spec) - known
    if unknown:
        raise ProteinPanelError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    missing = {"name", "has_proxy", "rationale"} - set(spec)
    if missing:
        raise ProteinPanelError(f"{where}: missing key(s) {sorted(missing)}")
    genes = tuple(str(g) for g in spec.get("genes") or ())
    weights = {str(k): float(v) for k, v in (spec.get("weights") or {}).items()}
    marker = Marker(
        name=str(spec["name"]),
        description=str(spec.get("description", "")),
        synonyms=tuple(str(s) for s in spec.get("synonyms") or ()),
        genes=genes,
        has_proxy=bool(spec["has_proxy"]),
        rationale=str(spec["rationale"]).strip(),
        weights=weights,
    )
    if marker.has_proxy and not genes:
        raise ProteinPanelError(f"{where} ({marker.name}): has_proxy is true but no genes are listed")
    if not marker.has_proxy and genes:
        raise ProteinPanelError(f"{where} ({marker.name}): has_proxy is false but genes {list(genes)} are listed")
    if not marker.rationale:
        raise ProteinPanelError(f"{where} ({marker.name}): the rationale is empty")
    stray = set(weights) - set(genes)
    if stray or any(w <= 0 for w in weights.values()):
        raise ProteinPanelError(
            f"{where} ({marker.name}): weights must be positive and name listed genes; got {weights}"
        )
    return marker


def load_protein_panel(path: str | Path | None = None) -> ProteinPanel:
    """Read and validate the curated panel (default: the shipped ``protein_panel.yaml``).

    Checks: the 50 ROSIE markers in ROSIE order, ``has_proxy`` agreeing with ``genes``, a
    rationale for every marker, and no synonym shared by two markers.
    """
    p = Path(path) if path is not None else DEFAULT_PANEL_FILE
    return _load_cached(str(p.resolve()))


@lru_cache(maxsize=4)
def _load_cached(path: str) -> ProteinPanel:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: protein panel file missing")
    with open(p) as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("markers"), list):
        raise ProteinPanelError(f"{p}: expected a mapping with a 'markers' list")
    markers = tuple(_marker_from_dict(spec, f"{p}: markers[{i}]") for i, spec in enumerate(raw["markers"]))
    names = tuple(m.name for m in markers)
    if names != ROSIE_MARKERS:
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(names, ROSIE_MARKERS)) if a != b][:5]
        raise ProteinPanelError(
            f"{p}: markers must be the {len(ROSIE_MARKERS)} ROSIE markers in ROSIE order; "
            f"got {len(names)} markers, first differences (index, file, expected): {diff}"
        )
    aliases = {str(k): tuple(str(a) for a in v) for k, v in (raw.get("gene_aliases") or {}).items()}
    panel = ProteinPanel(markers=markers, gene_aliases=aliases, source=str(p))
    _synonym_index(panel)  # raises on clashes
    return panel


def _synonym_index(panel: ProteinPanel) -> dict[str, str]:
    index: dict[str, str] = {}
    for m in panel.markers:
        for n in m.names:
            key = compact_key(n)
            if not key:
                raise ProteinPanelError(f"{panel.source}: synonym {n!r} of {m.name} has no letters or digits")
            if index.get(key, m.name) != m.name:
                raise ProteinPanelError(f"{panel.source}: synonym {n!r} names both {index[key]} and {m.name}")
            index[key] = m.name
    return index


@lru_cache(maxsize=4)
def _index_for(path: str) -> dict[str, str]:
    return _synonym_index(_load_cached(path))


def _index(panel: ProteinPanel | None) -> dict[str, str]:
    if panel is None:
        return _index_for(str(DEFAULT_PANEL_FILE.resolve()))
    return _synonym_index(panel)


def find_marker(text: str, panel: ProteinPanel | None = None) -> str | None:
    """The panel marker that ``text`` names as a whole ("PD-L1" → ``"PDL1"``), or ``None``."""
    return _index(panel).get(compact_key(text))


def marker_synonyms(panel: ProteinPanel | None = None) -> dict[str, list[str]]:
    """Marker name → its names (the panel name first, then synonyms), in ROSIE order."""
    panel = panel or load_protein_panel()
    return {m.name: list(m.names) for m in panel.markers}


def find_markers_in(text: str, panel: ProteinPanel | None = None) -> list[str]:
    """Markers named anywhere inside ``text`` as whole words, in order of mention, no repeats.

    ``"PD-L1 high tumour with pan-cytokeratin"`` → ``["PDL1", "PanCK"]``. Words are split at
    spaces and punctuation and joined again, so "pan cytokeratin" and "pan-cytokeratin" agree;
    where mentions overlap the longest wins ("cytokeratin 8/18" is Keratin8/18, not PanCK).
    """
    index = _index(panel)
    words = re.findall(r"[0-9a-z]+", text.lower().translate(_GREEK))
    spans: list[tuple[int, int, int, str]] = []  # (length in characters, first word, words, marker)
    for n in range(min(_MAX_NGRAM, len(words)), 0, -1):
        for i in range(len(words) - n + 1):
            hit = index.get("".join(words[i : i + n]))
            if hit:
                spans.append((sum(len(w) for w in words[i : i + n]), i, n, hit))
    taken: set[int] = set()
    chosen: list[tuple[int, str]] = []
    for _, start, n, marker in sorted(spans, key=lambda s: (-s[0], s[1])):  # longest mention wins
        cover = set(range(start, start + n))
        if not cover & taken:
            taken |= cover
            chosen.append((start, marker))
    out: list[str] = []
    for _, marker in sorted(chosen):
        if marker not in out:
            out.append(marker)
    return out
