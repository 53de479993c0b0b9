"""Stage 5 — the virtual protein panel: the 50 ROSIE markers per spot, by two routes.

* Route A (:mod:`.rosie`, :mod:`.from_image`, :mod:`.train_rosie`): the ROSIE ConvNeXt-Small on
  H&E windows, with user-provided weights; training code for paired H&E + multiplex images.
* Route B (:mod:`.from_expression`, the default that works offline): marker levels from the
  (inferred or measured) transcriptome through the curated gene map of :mod:`.panel`.

Then :mod:`.qc` (dynamic range, Wasserstein distance), :mod:`.ome_tiff` (OME-TIFF on the H&E pixel grid
or at the spot grid)
and :mod:`.evaluate` (route B on inferred vs measured expression). Typical use::

    proteins_from_expression(adata)           # obsm["proteins"], uns["protein_markers"]
    protein_qc(adata)                         # uns["protein_qc"]
    export_panel(adata, "C2_virtual_proteins.ome.tif")   # on the H&E grid (configs/proteins.yaml export)
"""

from .config import ExportConfig, ExpressionRouteConfig, ProteinQCConfig, ProteinsConfig, RosieConfig, RosieTrainConfig
from .evaluate import compare_routes, per_section_correlations
from .from_expression import marker_levels, proteins_from_expression
from .ome_tiff import (
    export_ome_tiff,
    export_ome_tiff_on_image,
    export_panel,
    image_grid,
    read_ome_tiff,
    spot_grid,
    write_ome_pyramid,
    write_ome_tiff,
)
from .panel import (
    ROSIE_MARKERS,
    Marker,
    ProteinPanel,
    ProteinPanelError,
    find_marker,
    find_markers_in,
    load_protein_panel,
    marker_synonyms,
)
from .qc import marker_qc, protein_qc, qc_table
from .scaling import scale_levels

__all__ = [
    "ROSIE_MARKERS",
    "ExportConfig",
    "ExpressionRouteConfig",
    "Marker",
    "ProteinPanel",
    "ProteinPanelError",
    "ProteinQCConfig",
    "ProteinsConfig",
    "RosieConfig",
    "RosieTrainConfig",
    "compare_routes",
    "export_ome_tiff",
    "export_ome_tiff_on_image",
    "export_panel",
    "image_grid",
    "find_marker",
    "find_markers_in",
    "load_protein_panel",
    "marker_levels",
    "marker_qc",
    "marker_synonyms",
    "per_section_correlations",
    "protein_qc",
    "proteins_from_expression",
    "qc_table",
    "read_ome_tiff",
    "scale_levels",
    "spot_grid",
    "write_ome_pyramid",
    "write_ome_tiff",
]
