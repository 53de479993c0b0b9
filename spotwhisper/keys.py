"""AnnData keys every stage reads and writes (the scanpy/squidpy conventions, plus ours).

One place names them, so stages agree without importing each other.

=========================  =====================================================================
key                        contents
=========================  =====================================================================
``X``                      raw UMI counts (``scipy.sparse.csr_matrix``, float32) as read by ``io``
``obsm["spatial"]``        spot centres in full-resolution pixels of the slide, ``(n, 2)`` as (x, y)
``uns["spatial"][lib]``    ``images`` (``"hires"`` downsample), ``scalefactors``, ``metadata``
``obs["section"]``         section / library id (e.g. ``"C2"``)
``obs["patient"]``         patient id (e.g. ``"C"``)
``obs["array_x/_y"]``      integer array coordinates of the spot
``obs["label"]``           pathologist region label (``NaN`` where none)
``obs["cluster"]``         expression cluster id; ``cluster_annotation`` / ``cluster_evidence`` text
``obs["deconv_<type>"]``   cell-type proportion per spot (stereoscope, major tier)
``obsm["features_<m>"]``   image features of model ``m``, ``(n, d)``
``layers["uncertainty_*"]``  aleatoric / epistemic variance of inferred expression
``obsm["proteins"]``       virtual protein panel, ``(n, 50)``; names in ``uns["protein_markers"]``
``obsm["text_emb"]``       transcriptome embedding in the shared transcriptome-text space
``obsm["image_text_emb"]`` image embedding in an image-text space
=========================  =====================================================================
"""

SPATIAL = "spatial"
SECTION = "section"
PATIENT = "patient"
ARRAY_X = "array_x"
ARRAY_Y = "array_y"
LABEL = "label"
CLUSTER = "cluster"
CLUSTER_ANNOTATION = "cluster_annotation"
CLUSTER_EVIDENCE = "cluster_evidence"
DECONV_PREFIX = "deconv_"

# scale-factor names inside uns["spatial"][library_id]["scalefactors"]
HIRES_SCALEF = "tissue_hires_scalef"
LOWRES_SCALEF = "tissue_lowres_scalef"
SPOT_DIAMETER = "spot_diameter_fullres"
SPOT_SPACING = "spot_spacing_fullres"
MPP = "microns_per_pixel"
# metadata inside uns["spatial"][library_id]["metadata"]
SOURCE_IMAGE = "source_image_path"
SOURCE_IMAGE_SCALE = "source_image_scale"  # full-res pixel → source-image pixel factor
TECHNOLOGY = "technology"

FEATURES_PREFIX = "features_"
PROTEINS = "proteins"
PROTEIN_MARKERS = "protein_markers"
TEXT_EMB = "text_emb"
IMAGE_TEXT_EMB = "image_text_emb"
