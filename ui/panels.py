"""The UI's folded panels (annotations, upload, export): layout only, built inside ``gr.Blocks``
by :func:`spotwhisper.ui.app.build_app`, which wires their events."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr


def annotations_box() -> SimpleNamespace:
    """Keep the regions shown under a label, save them as GeoJSON, load a GeoJSON file."""
    with gr.Accordion("annotations: keep regions, save and reload them (GeoJSON)", open=False):
        with gr.Row():
            label = gr.Textbox(label="label (default: the query)", elem_id="annotation-label")
            keep = gr.Button("keep the regions shown", elem_id="annotation-keep")
            save = gr.Button("save annotations", elem_id="annotation-save")
            file = gr.File(label="load annotations (.geojson)", type="filepath", file_types=[".geojson", ".json"],
                           elem_id="annotation-load")
        status = gr.Markdown(elem_id="annotation-status")
        files = gr.File(label="saved", interactive=False, elem_id="annotation-files")
    return SimpleNamespace(label=label, keep=keep, save=save, file=file, status=status, files=files)


def upload_box() -> SimpleNamespace:
    """An H&E image, an optional spot table, a name, µm/px when nothing else tells, keep on disk."""
    with gr.Accordion("upload a slide", open=False):
        with gr.Row():
            image = gr.File(label="H&E image (JPEG, PNG, TIFF, SVS …)", type="filepath", elem_id="upload-image")
            spots = gr.File(label="optional spot table (CSV: x, y in full-resolution px; barcode/id)", type="filepath")
            with gr.Column():
                name = gr.Textbox(label="slide name (default: file name)")
                mpp = gr.Number(value=None, label="µm per pixel — needed only when neither the file nor a spot "
                                                  "table tells (tiles are cut in µm)")
                keep = gr.Checkbox(value=False, label="also add it to the collection on disk", elem_id="upload-keep")
                button = gr.Button("process slide", variant="primary")
        status = gr.Markdown(elem_id="upload-status")
    return SimpleNamespace(image=image, spots=spots, name=name, mpp=mpp, keep=keep, button=button, status=status)


def export_box() -> SimpleNamespace:
    """Export the result on screen (CSV, .h5ad, GeoJSON, virtual proteins)."""
    with gr.Accordion("export the current result", open=False):
        button = gr.Button("export CSV, .h5ad, GeoJSON and virtual proteins (OME-TIFF)")
        files = gr.File(label="files", file_count="multiple", interactive=False, elem_id="export-files")
        status = gr.Markdown()
    return SimpleNamespace(button=button, files=files, status=status)
