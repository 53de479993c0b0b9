"""The ROSIE marker panel: order, curated gene map, synonyms, agreement with the vocabulary."""

from __future__ import annotations

import pytest
import yaml

from spotwhisper.prompts import load_vocabulary
from spotwhisper.proteins.panel import (
    DEFAULT_PANEL_FILE,
    ROSIE_MARKERS,
    ProteinPanelError,
    find_marker,
    find_markers_in,
    load_protein_panel,
    marker_synonyms,
)

# the panel as the issue (and the ROSIE README) lists it
ISSUE_ORDER = (
    "DAPI, CD45, CD68, CD14, PD1, FoxP3, CD8, HLA-DR, PanCK, CD3e, CD4, aSMA, CD31, Vimentin, CD45RO, Ki67, "
    "CD20, CD11c, Podoplanin, PDL1, GranzymeB, CD38, CD141, CD21, CD163, BCL2, LAG3, EpCAM, CD44, ICOS, GATA3, "
    "Gal3, CD39, CD34, TIGIT, ECad, CD40, VISTA, HLA-A, MPO, PCNA, ATM, TP63, IFNg, Keratin8/18, IDO1, CD79a, "
    "HLA-E, CollagenIV, CD66"
).split(", ")


def test_panel_is_rosie_order_with_rationale():
    panel = load_protein_panel()
    assert list(ROSIE_MARKERS) == ISSUE_ORDER
    assert panel.names == ISSUE_ORDER
    assert panel.index("PDL1") == 19 and panel.index("CD66") == 49
    for m in panel.markers:
        assert m.rationale, m.name
        assert m.has_proxy == bool(m.genes), m.name


def test_gene_map_entries():
    panel = load_protein_panel()
    assert panel.without_proxy == ["DAPI", "CD45RO"]
    assert set(panel["PanCK"].genes) >= {"KRT8", "KRT18", "KRT19"}
    assert panel["CD3e"].genes == ("CD3E",)
    assert set(panel["HLA-DR"].genes) == {"HLA-DRA", "HLA-DRB1"}
    assert panel["Ki67"].genes == ("MKI67",)
    assert panel["PDL1"].genes == ("CD274",)
    assert panel.gene_aliases["VSIR"] == ("C10orf54",)
    genes = panel.proxy_genes(with_aliases=True)
    assert "C10orf54" in genes and len(genes) == len(set(genes))


@pytest.mark.parametrize(
    "text, marker",
    [
        ("PD-L1", "PDL1"), ("PDL1", "PDL1"), ("CD274", "PDL1"), ("B7-H1", "PDL1"), ("pd l1", "PDL1"),
        ("pan-cytokeratin", "PanCK"), ("pan-CK", "PanCK"), ("PanCK", "PanCK"), ("cytokeratin", "PanCK"),
        ("Ki-67", "Ki67"), ("MKI67", "Ki67"), ("α-SMA", "aSMA"), ("alpha smooth muscle actin", "aSMA"),
        ("IFN-γ", "IFNg"), ("cytokeratin 8/18", "Keratin8/18"), ("E-cadherin", "ECad"), ("CD45RO", "CD45RO"),
        ("HLA-DR", "HLA-DR"), ("hla-e", "HLA-E"), ("C10orf54", "VISTA"), ("tumour", None), ("CD999", None),
    ],
)  # fmt: skip
def test_find_marker(text, marker):
    assert find_marker(text) == marker


def test_find_markers_in_query():
    assert find_markers_in("PD-L1 high tumour next to stroma") == ["PDL1"]
    assert find_markers_in("CD3 T cells and pan cytokeratin, Ki-67 high") == ["CD3e", "PanCK", "Ki67"]
    # the longest mention wins: cytokeratin 8/18 is not PanCK, CD45 RO is not CD45
    assert find_markers_in("cytokeratin 8/18 and CD45 RO") == ["Keratin8/18", "CD45RO"]
    assert find_markers_in("invasive carcinoma") == []


def test_marker_synonyms_unique_and_complete():
    syn = marker_synonyms()
    assert list(syn) == ISSUE_ORDER
    assert syn["PDL1"][0] == "PDL1" and {"PD-L1", "CD274", "B7-H1"} <= set(syn["PDL1"])
    for marker, names in syn.items():
        for n in names:
            assert find_marker(n) == marker, (n, marker)


def test_vocabulary_proteins_use_panel_names():
    vocab = load_vocabulary()
    names = set(ROSIE_MARKERS)
    mismatched = {t.name: p for t in vocab.terms.values() for p in t.proteins if p not in names}
    assert mismatched == {}


def _write_panel(tmp_path, mutate):
    raw = yaml.safe_load(DEFAULT_PANEL_FILE.read_text())
    mutate(raw)
    path = tmp_path / "panel.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["markers"].reverse(), "ROSIE order"),
        (lambda r: r["markers"][1].update(genes=[]), "no genes"),
        (lambda r: r["markers"][0].update(genes=["FOO"]), "has_proxy is false"),
        (lambda r: r["markers"][2]["synonyms"].append("PD-L1"), "names both"),
        (lambda r: r["markers"][3].update(rationale=" "), "rationale is empty"),
    ],
)
def test_bad_panel_file_is_refused(tmp_path, mutate, message):
    with pytest.raises(ProteinPanelError, match=message):
        load_protein_panel(_write_panel(tmp_path, mutate))
