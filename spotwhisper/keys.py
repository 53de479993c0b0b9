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
``layers["log1p"]``        log1p(counts per 10k) of the gene panel (made from ``X``, or inferred from the H&E)
``layers["uncertainty_*"]``  aleatoric / epistemic variance of inferred expression
``uns["expression_model"]``  the model that inferred the expression: encoder, genes, members, weights
``obsm["proteins"]``       virtual protein panel, ``(n, 50)``; names in ``uns["protein_markers"]``
``obsm["text_emb"]``       transcriptome embedding in the shared transcriptome-text space
``obsm["image_text_emb"]`` image embedding in an image-text space
``obsm["text_emb_measured"]``  the *measured* transcriptome's embedding in the transcriptome-text space (slides with counts)
``obsm["image_text_emb_aligned"]``  the aligned image head's embedding (H&E → the transcriptome-text space)
``obsm["proteins_raw"]``   protein levels before scaling (route B: log1p units; route A: ROSIE output)
``uns["protein_panel"]``   how ``obsm["proteins"]`` was made: route, input, scaling, genes used per marker
``uns["protein_qc"]``      per-marker QC table (dynamic range, Wasserstein distance, informative flag)
``obsm["image_text_emb_<m>"]``  spot-tile embedding of image-text model ``m`` (``plip``, ``conch``), ``(n, D)``, L2-normalised; NaN rows = not embedded
``uns["image_text"][m]``  how ``obsm["image_text_emb_<m>"]`` was made: weights, tile side (µm), px, mpp
``obs["barcode"]``         10x barcode of the spot (Visium; ``obs_names`` are ``<library>_<barcode>``)
``uns["visium_join"]``     Visium counts/positions join report: matched and left-out barcodes, source files
``uns["her2st_join"]``     her2st join report: spots of the counts, the spot table and the image that were kept
``uns["rank_genes_groups"]``  scanpy's marker-gene ranking (``sc.tl.rank_genes_groups``; read by the captions)
``uns["embedding_models"][k]``  model that made ``obsm[k]`` (read by the index): ``{"name", "version", "dim"}``
``obsm["features_<m>_sub"]``  sub-tile image features of model ``m``, ``(n, g*g, d)``, row-major sub-tiles
``uns["features"][m]``     how ``obsm["features_<m>"]`` was made: encoder spec, weights id, tile µm / px / mpp, ring ``neighbours`` ``(n, k)``, tile QC
``uns["text_emb_info"]``   how ``obsm["text_emb"]`` was made: transcriptome-text model ``fingerprint``, ``logit_scale``, ``dim``
``obs["search_fused"]``    exported search result (UI): fused relevance per spot (log-odds); ``obs["search_region"]`` region id (0 = none)
``obs["search_score_<r>"]``  exported search result (UI): raw score of route ``r`` per spot
``uns["search"]``          exported search result (UI): ``query``, ``positive``, ``negative``, ``threshold``, ``routes``, ``n_regions``
``uns["familiarity"]``     how familiar the slide is to the image models: ``distance_ratio`` (feature distance vs held-out training slides), ``level``, ``sentence``, ``share``, ``epistemic_median``, ``mpp``
``uns["pipeline"]``        models that processed the slide (``spotwhisper.pipeline``); ``image_models``: ``"default"`` or ``"coarse"``
``obsm["image_vec"]``      pooled image vector per spot for search by example, ``(n, 128)`` float32, L2-normalised
                           (:mod:`spotwhisper.encoders.pooled`); ``uns["image_vec"]``: ``encoder``, ``dim``, ``seed``
``obs["<K>_fused"]`` …     a search written into AnnData under ``key_added=K`` (``spotwhisper.tl.search``; the UI
                           export uses ``K="search"``): ``obs["<K>_fused"]`` fused relevance (log-odds),
                           ``obs["<K>_region"]`` region id (0 = none), ``obs["<K>_score_<r>"]`` raw score and
                           ``obs["<K>_relevance_<r>"]`` relevance of route ``r``; ``uns["<K>"]`` the query,
                           threshold, routes, regions and explanation
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
PROTEINS_RAW = "proteins_raw"
PROTEIN_INFO = "protein_panel"
PROTEIN_QC = "protein_qc"
IMAGE_TEXT_EMB_PREFIX = "image_text_emb_"
IMAGE_TEXT_INFO = "image_text"
EMBEDDING_MODELS = "embedding_models"  # uns[...][obsm key] = {"name", "version", "dim"}
FEATURES_SUB_SUFFIX = "_sub"  # obsm["features_<m>_sub"]
FEATURES_UNS = "features"  # uns["features"][m]
TEXT_EMB_INFO = "text_emb_info"  # uns[...] = {"fingerprint", "logit_scale", "dim"} of obsm["text_emb"]
SEARCH_FUSED = "search_fused"  # obs[...] of an exported search result: fused relevance (log-odds)
SEARCH_REGION = "search_region"  # obs[...]: region id, 0 = no region
SEARCH_SCORE_PREFIX = "search_score_"  # obs["search_score_<route>"]: raw route score
SEARCH_INFO = "search"  # uns[...]: the query, threshold and routes of an exported result
PIPELINE = "pipeline"  # uns[...]: models that processed the slide; ["image_models"] = "default" | "coarse"
FAMILIARITY = "familiarity"  # uns[...]: familiarity of the slide to the image models (spotwhisper.expression.familiarity)
IMAGE_VEC = "image_vec"  # obsm[...]: pooled image vector per spot (search by example); uns[...]: how it was made
SEARCH_RELEVANCE_PREFIX = "search_relevance_"  # obs["search_relevance_<route>"]: relevance of route <route>
#: suffixes of the obs columns a search writes under ``key_added`` K: obs[K + suffix]
FUSED_SUFFIX, REGION_SUFFIX, SCORE_SUFFIX, RELEVANCE_SUFFIX = "_fused", "_region", "_score_", "_relevance_"
CANDIDATE_SUFFIX = "_candidate"  # obs[K + ...]: low-confidence candidate area id (0 = none; slides unlike the training ones)
BARCODE = "barcode"  # obs[...]: 10x barcode of the spot
LOG1P = "log1p"  # layers[...]: log1p(counts per 10k)
UNCERTAINTY_ALEATORIC = "uncertainty_aleatoric"  # layers[...]: aleatoric variance of inferred expression
UNCERTAINTY_EPISTEMIC = "uncertainty_epistemic"  # layers[...]: epistemic variance (ensemble spread)
EXPRESSION_MODEL = "expression_model"  # uns[...]: the model that inferred the expression
TEXT_EMB_MEASURED = "text_emb_measured"  # obsm[...]: measured transcriptome in the transcriptome-text space
ALIGNED = "aligned"  # the aligned image head's model name (its image–text space is the transcriptome-text space)
IMAGE_TEXT_EMB_ALIGNED = IMAGE_TEXT_EMB_PREFIX + ALIGNED  # obsm[...]: aligned head embedding
VISIUM_JOIN = "visium_join"  # uns[...]: Visium counts/positions join report
HER2ST_JOIN = "her2st_join"  # uns[...]: her2st counts/spots/image join report (per section when merged)
RANK_GENES_GROUPS = "rank_genes_groups"  # uns[...]: scanpy's marker-gene ranking (captions read it)
SPATIALDATA_ATTRS = "spatialdata_attrs"  # uns[...] of a SpatialData table: the region and instance keys it annotates
