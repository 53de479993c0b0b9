"""The Python API in the scanpy manner: ``import spotwhisper as sw``.

=====================  ==========================================================================
``sw.read(...)``        a her2st section, a Space Ranger folder (counts optional), an ``.h5ad``, an
                        image with or without a spot table, a SpatialData object → AnnData
                        (:mod:`.reading`)
``sw.tl.infer``         H&E → inferred expression with uncertainty, virtual proteins, embeddings, the
                        pooled image vector (:mod:`.tl`)
``sw.tl.search``        a free-text query or an example (``like=``) → relevance per route and fused in
                        ``obs``, regions and explanation in ``uns``
``sw.tl.compare``       two queries on one slide: where A, B or both match, what separates them
``sw.pl.search``        the search map on the slide image (the CLI's PNG in matplotlib) (:mod:`.pl`)
``sw.pl.proteins``      virtual protein markers on the slide image
``sw.Collection``       build, open, add to and search a FAISS collection — the objects the CLI uses
                        (:mod:`.collection`)
=====================  ==========================================================================

Every key written is listed in :mod:`spotwhisper.keys`. The modules import their heavy libraries
when first used, so ``import spotwhisper`` stays cheap. Models are loaded once per process and
shared by every call (:mod:`.loaded`).
"""
