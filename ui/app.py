"""The Gradio app: chat, slide with heat-map overlay, threshold and route toggles, top tiles,
genes and proteins, slide picker and upload, export.

:func:`build_app` lays out the Blocks over a :class:`~spotwhisper.search.engine.SearchEngine`;
:func:`launch` serves it (``spotwhisper demo`` and ``spotwhisper serve`` call it). Callbacks only
wire components to the plain functions in :mod:`spotwhisper.ui.handlers`, :mod:`spotwhisper.ui.chat`, :mod:`spotwhisper.ui.display`
and :mod:`spotwhisper.ui.files`; each session keeps its :class:`~spotwhisper.ui.handlers.View` in a ``gr.State``.

Many users at once (:mod:`spotwhisper.ui.sessions`, :mod:`spotwhisper.ui.access`): the engine is shared
read-only; every callback works on ``sess.engine(engine)`` — the shared collection plus the
session's own uploads — so one session's slides are never seen by another. Every picture or file
sent to the browser goes through ``store.serve`` (only the owning browser may fetch it). Events of
different sessions run in parallel (``concurrency_limit``); uploads one at a time.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from spotwhisper.io import SlideError
from spotwhisper.names import unique_name
from spotwhisper.search.engine import SearchEngine

from . import handlers as h
from .access import FileAccessMiddleware, request_ids
from .chat import respond
from .config import UIConfig, load_ui_config
from .display import (
    evidence_table,
    overlay,
    regions_frame,
    slide_picture,
    spot_at,
    tile_gallery,
)
from .files import (
    add_to_collection,
    export_result,
    keep_upload,
    prepare_upload,
    process_upload,
    public_text,
)
from .sessions import QuotaError, Session, SessionAccessError, SessionStore

log = logging.getLogger(__name__)
CSS = "#overlay img {object-fit: contain;} #map-caption {min-height: 2em;}"


class _Models:
    """The pipeline models, loaded on the first upload and shared by every session."""

    def __init__(self):
        self._models = None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._models is None:
                from spotwhisper.pipeline import Models

                self._models = Models.load()
            return self._models


def build_app(engine: SearchEngine, cfg: UIConfig | None = None, example: str | None = None,
              store: SessionStore | None = None) -> gr.Blocks:
    """The Blocks app over ``engine`` (not launched). ``example`` pre-fills the chat box; ``store``
    keeps the sessions (default: one over ``cfg``'s data folder; :func:`launch` guards its files)."""
    cfg = cfg or load_ui_config()
    store = store or SessionStore(cfg)
    os.environ["GRADIO_TEMP_DIR"] = str(store.gradio_dir)  # read by every component made below
    models = _Models()
    examples = ([example] if example else []) + [e for e in cfg.examples if e != example]

    def session(request: gr.Request | None) -> tuple[Session, SearchEngine]:
        """The caller's session (its browser checked) and the engine it searches."""
        try:
            sess = store.session(*request_ids(request))
        except SessionAccessError as err:
            raise gr.Error(str(err)) from err
        return sess, sess.engine(engine)

    def render(sess: Session, eng: SearchEngine, view: h.View):
        """(overlay, caption, gallery, evidence, regions) for the slide on screen, pictures served to ``sess``."""
        if view.slide is None:
            return None, "No slides yet: upload one below.", [], evidence_table(None, 0), regions_frame(None)
        hits = view.hits()
        if hits is None:
            try:
                picture = slide_picture(eng.slide(view.slide), cfg.display_max_side, cfg.crop_margin)
            except (KeyError, ValueError) as err:
                return None, public_text(str(err.args[0] if err.args else err)), [], evidence_table(None, 0), regions_frame(None)
            shown = store.serve(sess, picture, view.slide, slot="overlay")
            return shown, h.map_caption(view), [], evidence_table(None, 0), regions_frame(None)
        caption = h.map_caption(view)
        try:
            tiles = tile_gallery(hits, cfg.gallery_tiles, cfg.tile_px, cfg.tile_context)
        except (FileNotFoundError, SlideError, KeyError, ValueError) as err:
            tiles, caption = [], caption + f" (tiles unavailable: {public_text(str(err))})"
        served = store.serve_all(sess, [(t, f"tile-{i + 1}") for i, (t, _) in enumerate(tiles)], slot="tiles")
        gallery = [(p, c) for p, (_, c) in zip(served, tiles)]
        evidence = evidence_table(view.explained or hits.explanation, cfg.table_rows)
        picture = overlay(hits, view.threshold, cfg.display_max_side, cfg.crop_margin)
        return store.serve(sess, picture, hits.slide, slot="overlay"), caption, gallery, evidence, regions_frame(hits)

    def on_load(view, request: gr.Request):
        sess, eng = session(request)
        return (view, *render(sess, eng, view))

    def on_unload(request: gr.Request):
        store.close(request_ids(request)[0])

    def on_message(message, history, view, request: gr.Request):
        sess, eng = session(request)
        earlier = list(history or [])
        history = earlier + ([{"role": "user", "content": message}] if (message or "").strip() else [])
        try:
            text, view = respond(eng, view, message, earlier, cfg)
        except Exception as err:  # the UI must answer, whatever broke underneath
            log.exception("chat failed")
            text = f"Something went wrong: {public_text(str(err))}"
        history.append({"role": "assistant", "content": text})
        return (history, view, "", gr.update(value=view.slide), *render(sess, eng, view))

    def on_view_change(view, request, **change):
        sess, eng = session(request)
        try:
            view = h.update_view(eng, view, cfg, **change)
        except ValueError as err:
            gr.Warning(public_text(str(err)))
        return (view, *render(sess, eng, view))

    def on_threshold(value, view, request: gr.Request):
        return on_view_change(view, request, threshold=value)

    def on_routes(groups, view, request: gr.Request):
        return on_view_change(view, request, groups=list(groups or []))

    def on_slide(slide, view, request: gr.Request):
        sess, eng = session(request)
        if slide not in eng.slide_names():  # the picker's value comes from the browser
            gr.Warning(f"no slide {str(slide)[:80]!r} here")
            return (view, *render(sess, eng, view))
        view = replace(view, slide=slide, focus=1, explained=None)
        if view.base is not None and view.hits() is None:
            try:
                _, view = h.run_search(eng, view, view.base.query.text, cfg)
            except ValueError as err:
                gr.Warning(public_text(str(err)))
        return (view, *render(sess, eng, view))

    def on_click(evt: gr.SelectData, history, view, request: gr.Request):
        sess, eng = session(request)
        hits = view.hits()
        if hits is None or not isinstance(evt.index, (list, tuple)):
            return (history, view, *render(sess, eng, view))
        spot = spot_at(hits, float(evt.index[0]), float(evt.index[1]), cfg.display_max_side, cfg.crop_margin)
        region = next((r.id for r in hits.regions if spot is not None and spot in set(r.spots.tolist())), None)
        if region is None:
            return (history, view, *render(sess, eng, view))
        text, view = h.run_explain(eng, view, cfg, region)
        return (list(history or []) + [{"role": "assistant", "content": text}], view, *render(sess, eng, view))

    def on_upload(image, spots, name, mpp, keep, view, request: gr.Request, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio injects it
        sess, eng = session(request)
        if not image:
            return ("Choose an image file first.", view, gr.update(), *render(sess, eng, view))
        sent = [Path(image)] + ([Path(spots)] if spots else [])
        try:
            store.reserve(sum(p.stat().st_size for p in sent if p.is_file()), "the upload")
            kept = [keep_upload(p, sess.folder) for p in sent]
        except (QuotaError, FileNotFoundError) as err:
            return (public_text(str(err)), view, gr.update(), *render(sess, eng, view))
        finally:
            for p in sent:  # Gradio's copy: the session folder holds the upload now
                if store.guards(p):
                    p.unlink(missing_ok=True)
        try:
            slide_name = unique_name(name or Path(image).stem, eng.slide_names())
            inp = prepare_upload(kept[0], kept[1] if spots else None, slide_name, float(mpp or cfg.upload_mpp),
                                 cfg.max_image_pixels, cfg.max_tiled_pixels)
            progress(0.0, desc="loading models")
            adata, _ = process_upload(inp, models.get(), sess.folder)
        except (ValueError, FileNotFoundError, KeyError, SlideError, MemoryError) as err:
            msg = public_text(str(err.args[0] if err.args else err))
            return (f"Could not process the upload: {msg}\n\nNothing is lost: the file stays in this session's "
                    "folder until the session ends.", view, gr.update(), *render(sess, eng, view))
        sess.slides[slide_name] = adata
        eng = sess.engine(engine)
        view = replace(view, slide=slide_name, focus=1, explained=None)
        status = (f"Added **{slide_name}**: {adata.n_obs} {'spots' if spots else 'grid tiles'} processed. "
                  "It is visible and searchable in this session only. ")
        later = ("export a result on it and run `spotwhisper index build --collection NAME --add --from-h5ad "
                 "<the exported .h5ad>`")
        if keep:
            try:
                status += add_to_collection(engine, adata) + "."
            except (ValueError, KeyError, FileNotFoundError, OSError) as err:
                status += (f"It was not added to the collection: {public_text(str(err))}. Later: {later}.")
        else:
            status += f"To add it to a collection on disk: {later}."
        picker = gr.update(choices=eng.slide_names(), value=slide_name)
        return (status, view, picker, *render(sess, eng, view))

    def on_export(view, request: gr.Request):
        sess, _ = session(request)
        hits = view.hits()
        if hits is None:
            return None, "Nothing to export yet: search first."
        try:
            store.reserve(0, "the export")
            paths = export_result(view.shown, hits.slide, sess.folder)
        except QuotaError as err:
            return None, str(err)
        served = store.serve_all(sess, [(p, p.name) for p in paths], slot="exports")
        return served, f"Exported '{view.shown.query.text}' ({hits.slide}): CSV, .h5ad and GeoJSON (QuPath)."

    names = engine.slide_names()
    first = h.new_view(engine, cfg)
    lo, hi = cfg.threshold_range
    with gr.Blocks(title=cfg.title, analytics_enabled=False,
                   delete_cache=(int(cfg.cleanup_interval_s), int(cfg.session_ttl_s))) as app:
        app.spotwhisper_sessions = store
        state = gr.State(first, time_to_live=cfg.session_ttl_s)
        gr.Markdown(f"## {cfg.title} — search H&E slides with free text")
        with gr.Row():
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(elem_id="chat", height=460, label="chat")
                msg = gr.Textbox(value=example or "", elem_id="query", label="ask", placeholder=examples[0] if examples else "",
                                 submit_btn=True, lines=1)
                gr.Examples(examples, inputs=msg, label="examples")
            with gr.Column(scale=3):
                picker = gr.Dropdown(choices=names, value=names[0] if names else None, label="slide", elem_id="slide-picker")
                image = gr.Image(elem_id="overlay", label="heat map", format="png", type="pil", interactive=False, height=560)
                caption = gr.Markdown(elem_id="map-caption")
                with gr.Row():
                    thr = gr.Slider(lo, hi, value=first.threshold, step=cfg.threshold_step,
                                    label="threshold (fused z-score)", elem_id="threshold")
                    routes = gr.CheckboxGroup(list(cfg.route_groups), value=list(cfg.route_groups), label="routes (all = fused)",
                                              elem_id="routes")
        with gr.Row():
            gallery = gr.Gallery(label="top tiles (full resolution)", elem_id="tiles", columns=4, height=300)
            with gr.Column():
                evidence = gr.Dataframe(label="genes and proteins behind the highlighted region", elem_id="evidence",
                                        interactive=False, max_height=300)
                regions = gr.Dataframe(label="regions", elem_id="regions", interactive=False, max_height=200)
        with gr.Accordion("upload a slide", open=False):
            with gr.Row():
                up_image = gr.File(label="H&E image (JPEG, PNG, TIFF, SVS …)", type="filepath", elem_id="upload-image")
                up_spots = gr.File(label="optional spot table (CSV: x, y in full-resolution px; barcode/id)", type="filepath")
                with gr.Column():
                    up_name = gr.Textbox(label="slide name (default: file name)")
                    up_mpp = gr.Number(value=cfg.upload_mpp, label="µm per pixel (when the file does not say)")
                    up_keep = gr.Checkbox(value=False, label="also add it to the collection on disk", elem_id="upload-keep")
                    up_button = gr.Button("process slide", variant="primary")
            up_status = gr.Markdown(elem_id="upload-status")
        with gr.Accordion("export the current result", open=False):
            ex_button = gr.Button("export CSV, .h5ad and GeoJSON")
            ex_files = gr.File(label="files", file_count="multiple", interactive=False, elem_id="export-files")
            ex_status = gr.Markdown()

        shown = [image, caption, gallery, evidence, regions]
        app.load(on_load, [state], [state, *shown])
        app.unload(on_unload)
        msg.submit(on_message, [msg, chatbot, state], [chatbot, state, msg, picker, *shown], api_name="chat")
        thr.change(on_threshold, [thr, state], [state, *shown], trigger_mode="always_last")
        routes.input(on_routes, [routes, state], [state, *shown])
        picker.input(on_slide, [picker, state], [state, *shown], api_name="slide")
        image.select(on_click, [chatbot, state], [chatbot, state, *shown])
        up_button.click(on_upload, [up_image, up_spots, up_name, up_mpp, up_keep, state], [up_status, state, picker, *shown],
                        concurrency_limit=cfg.upload_concurrency, concurrency_id="upload", api_name="upload")
        ex_button.click(on_export, [state], [ex_files, ex_status], api_name="export")
    return app


def launch(engine: SearchEngine, host: str = "127.0.0.1", port: int | None = 7860, example: str | None = None,
           cfg: UIConfig | None = None, block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Serve the app on ``http://host:port``; with ``block=False`` return at once (tests), else
    serve until interrupted. Returns the launched Blocks (``.close()`` stops it; the session
    sweeper stops with the process)."""
    from starlette.middleware import Middleware

    cfg = cfg or load_ui_config()
    store = SessionStore(cfg)
    store.sweep()  # what an earlier server left behind
    app = build_app(engine, cfg, example, store)
    app.queue(default_concurrency_limit=cfg.concurrency_limit)  # sessions run in parallel; uploads one at a time
    store.start_sweeper()
    if not quiet:
        print(f"SpotWhisper UI on http://{host}:{port or 7860} (session data in {store.root}); Ctrl+C stops it")
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet, show_error=False,
               max_file_size=f"{cfg.max_upload_mb}mb", ssr_mode=False, theme=gr.themes.Soft(), css=CSS,
               app_kwargs={"middleware": [Middleware(FileAccessMiddleware, store=store)]})
    return app
