"""The Gradio app: chat beside a zoomable slide viewer with the heat map, threshold and route toggles,
top tiles, genes and proteins, a second slide side by side, annotations, upload and export.

:func:`build_app` lays out the Blocks over a :class:`~spotwhisper.search.engine.SearchEngine`;
:func:`launch` serves it (``spotwhisper demo`` and ``spotwhisper serve`` call it). Callbacks only
wire components to plain functions: :mod:`.handlers` (actions on a session's View), :mod:`.chat`
(answers), :mod:`.screen` (the viewer's JSON), :mod:`.display` (tables, tiles), :mod:`.files`
(uploads, exports), :mod:`.annotations`; each session keeps its View in a ``gr.State``.

The chat does not block: a message is shown at once (a step outside the queue), then the answer
arrives in steps (what is being done, the map and regions, their explanation); only the slide
viewer shows progress. The slide is an OpenSeadragon viewer fed with deep-zoom tiles of this
session (:mod:`.viewer`); clicking a numbered region explains it.

Many users at once (:mod:`.sessions`, :mod:`.access`): the engine is shared read-only; every
callback works on ``sess.engine(engine)`` (the collection plus the session's own uploads); every
file sent to the browser goes through ``store.serve``; viewer tiles go through per-session tokens.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from spotwhisper.io import SlideError
from spotwhisper.names import unique_name
from spotwhisper.search.engine import SearchEngine

from . import handlers as h
from .access import FileAccessMiddleware, request_ids
from .diffs import install_stream_diff
from .annotations import save_geojson
from .chat import message_text, respond_stream
from .config import UIConfig, load_ui_config
from .display import comparison_table, evidence_table, regions_frame, tile_gallery
from .files import (
    add_to_collection,
    export_proteins,
    export_result,
    models_sentence,
    process_upload,
    public_error,
    public_text,
    upload_input,
)
from .guard import guarded
from .panels import annotations_box, export_box, upload_box
from .received import UploadClaimError
from .screen import region_at, viewer_payload
from .sessions import QuotaError, Session, SessionAccessError, SessionStore
from .upload_mpp import ASK
from .viewer import ViewerRegistry, viewer_component, viewer_css

log = logging.getLogger(__name__)
CSS = "#map-caption {min-height: 2em;} #build-status {min-height: 1.2em;}"
NONE = "(none)"


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
              store: SessionStore | None = None, answered=None, build_status: Callable | None = None,
              registry: ViewerRegistry | None = None) -> gr.Blocks:
    """The Blocks app over ``engine`` (not launched). ``example`` pre-fills the chat box; ``answered``
    = ``(query, SearchResult, seconds)`` — or a function returning it, or None while it is not ready
    (``spotwhisper demo`` serves before its first answer) — opens the chat with that answer;
    ``build_status()`` (a :class:`~spotwhisper.collection.progressive.BuildStatus`) is shown while
    slides are still added."""
    cfg = cfg or load_ui_config()
    install_stream_diff()  # answers in steps reach the browser as sent (Gradio's own diff garbles nested lists)
    store = store or SessionStore(cfg)
    registry = registry or ViewerRegistry()
    os.environ["GRADIO_TEMP_DIR"] = str(store.gradio_dir)  # read by every component made below
    models = _Models()
    examples = ([example] if example else []) + [e for e in cfg.examples if e != example]
    first: dict = {}
    first_lock = threading.Lock()
    waiting = [{"role": "assistant", "content": f"Preparing the first slide: the example '{example}' is answered "
                                                 "here as soon as it is ready (progress above)."}]

    def opening() -> tuple[list[dict], h.View | None]:
        """The example's chat and view once answered (computed once, shared read-only by sessions)."""
        with first_lock:
            if "chat" not in first:
                ready = answered() if callable(answered) else answered
                if not ready:
                    return [], None
                first["chat"], first["view"] = h.first_answer(engine, cfg, ready)
            return first["chat"], first["view"]

    def pending() -> bool:
        return callable(answered) and opening()[1] is None

    def session(request: gr.Request | None) -> tuple[Session, SearchEngine]:
        try:
            sess = store.session(*request_ids(request))
        except SessionAccessError as err:
            raise gr.Error(str(err)) from err
        return sess, sess.engine(engine)

    def render(sess: Session, eng: SearchEngine, view: h.View) -> tuple:
        """(viewer, side-by-side box, second viewer, caption, gallery, evidence, regions, routes, threshold)."""
        try:
            main = viewer_payload(registry, sess.id, sess.owner, eng, view, "main")
            second = (viewer_payload(registry, sess.id, sess.owner, eng, view, "second", view.second)
                      if view.second else {"key": "second", "dzi": None})
        except (KeyError, ValueError, SlideError, FileNotFoundError) as err:
            main, second = {"key": "main", "dzi": None, "message": public_error(err)}, {"key": "second"}
        preparing = view.slide is None and build_status is not None
        if preparing:
            main["message"], main["info"] = f"Preparing the first slide — {build_status().line()}.", True
        hits = view.hits() if view.comparison is None else None
        caption, gallery = (build_line() if preparing else h.map_caption(view)), []
        if hits is not None:
            try:
                tiles = tile_gallery(hits, cfg.gallery_tiles, cfg.tile_px, cfg.tile_context)
                served = store.serve_all(sess, [(t, f"tile-{i + 1}") for i, (t, _) in enumerate(tiles)], slot="tiles")
                gallery = [(p, c) for p, (_, c) in zip(served, tiles)]
            except (FileNotFoundError, SlideError, KeyError, ValueError) as err:
                caption += f" (tiles unavailable: {public_error(err)})"
        expl = (view.explained or hits.explanation) if hits is not None else None
        table = (comparison_table(view.comparison, cfg.table_rows // 2) if view.comparison is not None
                 else evidence_table(expl, cfg.table_rows))
        return (main, gr.update(visible=bool(view.second)), second, caption, gallery, table, regions_frame(hits),
                gr.update(value=view.groups), gr.update(value=view.active_threshold))

    def build_line() -> str:
        if build_status is None:
            return ""
        st = build_status()
        return f"Collection: {st.line()}." + ("" if st.finished else " Slides appear in the picker as they are ready.")

    def with_opening(history, view) -> tuple[list | None, h.View]:
        """The example's answer for a session still waiting for it (else ``(None, view)``)."""
        chat, ready = opening()
        fresh = not history or (len(history) == 1 and message_text(history[0].get("content")).startswith(
            "Preparing the first slide"))
        if ready is None or view.base is not None or not fresh:
            return None, view
        return chat, replace(ready, annotations=[])

    def on_load(history, view, request: gr.Request):
        sess, eng = session(request)
        registry.prune(store.ids())  # sessions the store closed (idle, swept) lose their tile tokens too
        chat, view = with_opening(history, view)
        return (view, chat if chat is not None else gr.skip(), gr.update(choices=eng.slide_names(), value=view.slide),
                *render(sess, eng, view))

    def on_unload(request: gr.Request):
        sid, owner = request_ids(request)
        if store.close(sid, owner):  # only the session's own browser closes it
            registry.drop_session(sid)

    def on_tick(known, history, view, request: gr.Request):
        sess, eng = session(request)
        names = eng.slide_names()  # a followed collection (serve) picks up new commits here
        done = (build_status is None or build_status().finished) and not pending() and not live
        chat, view = with_opening(history, view)
        shown = render(sess, eng, view) if chat is not None else [gr.skip()] * 9
        timer = gr.Timer(value=1.0 if pending() else 3.0, active=not done)  # every second until the first answer
        if names == known and chat is None:
            return (build_line(), gr.skip(), gr.skip(), known, timer, gr.skip(), view, *shown)
        return (build_line(), gr.update(choices=names, value=view.slide), gr.update(choices=[NONE, *names]), names,
                timer, chat if chat is not None else gr.skip(), view, *shown)

    def on_post(message, history):
        if not (message or "").strip():
            return history, "", ""
        return list(history or []) + [{"role": "user", "content": message}], "", message

    def on_answer(message, history, view, request: gr.Request):
        sess, eng = session(request)
        history = list(history or [])
        if not (message or "").strip():
            yield (history, view, gr.skip(), *[gr.skip()] * 9)
            return
        last = history[-1] if history else {}
        if not (last.get("role") == "user" and message_text(last.get("content")) == message):
            history.append({"role": "user", "content": message})  # a call through the API
        earlier = history[:-1]
        try:
            for text, step, done in respond_stream(eng, view, message, earlier, cfg):
                view = step
                out = history + [{"role": "assistant", "content": text}]
                if not done and view.shown is None and view.comparison is None:
                    yield (out, view, gr.skip(), *[gr.skip()] * 9)
                    continue
                yield (out, view, gr.update(choices=eng.slide_names(), value=view.slide), *render(sess, eng, view))
        except Exception as err:  # the UI must answer, whatever broke underneath
            log.exception("chat failed")
            out = history + [{"role": "assistant", "content": f"Something went wrong: {public_error(err)}"}]
            yield (out, view, gr.skip(), *render(sess, eng, view))

    def on_view_change(view, request, **change):
        sess, eng = session(request)
        try:
            view = h.update_view(eng, view, cfg, **change)
        except (ValueError, KeyError) as err:  # KeyError: a damaged slide file (named, not its path)
            gr.Warning(public_error(err))
        return (view, *render(sess, eng, view))

    def on_threshold(value, view, request: gr.Request):
        return on_view_change(view, request, threshold=value)

    def on_routes(groups, view, request: gr.Request):
        return on_view_change(view, request, groups=list(groups or []))

    def _rerun(eng: SearchEngine, view: h.View) -> h.View:
        """The last question again, for a new slide on screen or beside it."""
        try:
            if view.comparison is not None:
                _, view = h.run_compare(eng, view, view.comparison.query_a, view.comparison.query_b, cfg)
            elif view.base is not None and (view.hits() is None or (view.second and view.hits(view.second) is None)):
                _, view = h.run_search(eng, view, view.base.query.text, cfg)
        except (ValueError, KeyError) as err:  # KeyError: a damaged slide file (named, not its path)
            gr.Warning(public_error(err))
        return view

    def on_slide(slide, view, request: gr.Request):
        sess, eng = session(request)
        if slide not in eng.slide_names():  # the picker's value comes from the browser
            gr.Warning(f"no slide {str(slide)[:80]!r} here")
            return (view, *render(sess, eng, view))
        view = _rerun(eng, replace(view, slide=slide, focus=1, explained=None))
        return (view, *render(sess, eng, view))

    def on_second(slide, view, request: gr.Request):
        sess, eng = session(request)
        second = None if slide in (None, "", NONE) or slide not in eng.slide_names() else slide
        view = _rerun(eng, replace(view, second=second))
        return (view, *render(sess, eng, view))

    def on_region(evt: gr.EventData, history, view, request: gr.Request):
        sess, eng = session(request)
        data = dict(getattr(evt, "_data", None) or {})
        slide = str(data.get("slide") or view.slide)
        region = data.get("region")
        if region is None and "x" in data:
            region = region_at(view, eng, slide, float(data["x"]), float(data["y"]))
        if region is None or view.hits(slide) is None:
            return (history, view, *[gr.skip()] * 9)
        text, view = h.run_explain(eng, view, cfg, int(region), slide)
        return (list(history or []) + [{"role": "assistant", "content": text}], view, *render(sess, eng, view))

    def on_like(history, view, request: gr.Request):
        sess, eng = session(request)
        try:
            text, view = h.run_like(eng, view, cfg)
        except (KeyError, ValueError) as err:
            text = f"Could not search by example: {public_text(str(err))}"
        return (list(history or []) + [{"role": "assistant", "content": text}], view, gr.update(choices=eng.slide_names(), value=view.slide),
                *render(sess, eng, view))

    def on_upload(image, spots, name, mpp, keep, view, request: gr.Request, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio injects it
        sess, eng = session(request)

        def said(text: str) -> tuple:
            return (text, view, gr.update(), *render(sess, eng, view))

        if not image:
            return said("Choose an image file first.")
        try:  # only files this browser uploaded (any other path is refused and left alone), into the session folder
            kept = store.take_uploads(sess, [image] + ([spots] if spots else []))
        except (UploadClaimError, QuotaError, FileNotFoundError) as err:
            return said(public_error(err))
        try:
            slide_name = unique_name(name or Path(image).stem, eng.slide_names())
            inp, choice = upload_input(kept, slide_name, float(mpp) if mpp else None, cfg)
            if inp is None:
                return said(ASK)
            progress(0.0, desc="loading models")
            adata, _ = process_upload(inp, models.get(), sess.folder)
        except (ValueError, FileNotFoundError, KeyError, SlideError, MemoryError) as err:
            return said(f"Could not process the upload: {public_error(err)}\n\nNothing is lost: the file stays in "
                        "this session's folder until the session ends.")
        sess.slides[slide_name] = adata
        eng = sess.engine(engine)
        view = replace(view, slide=slide_name, focus=1, explained=None, base=None, shown=None, comparison=None)
        status = (f"Added **{slide_name}**: {adata.n_obs} {'spots' if spots else 'grid tiles'} processed at "
                  f"{choice.sentence()}. {models_sentence(adata)}It is visible and searchable in this session only. ")
        later = ("export a result on it and run `spotwhisper index build --collection NAME --add --from-h5ad "
                 "<the exported .h5ad>`")
        if keep:
            try:
                status += add_to_collection(engine, adata) + "."
            except (ValueError, KeyError, FileNotFoundError, OSError) as err:
                status += f"It was not added to the collection: {public_error(err)}. Later: {later}."
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
            paths = [*export_result(view.shown, hits.slide, sess.folder),
                     export_proteins(hits, view.shown.query.text, sess.folder)]
        except (QuotaError, KeyError, ValueError) as err:
            return None, public_error(err)
        served = store.serve_all(sess, [(p, p.name) for p in paths], slot="exports")
        return served, (f"Exported '{view.shown.query.text}' ({hits.slide}): CSV, .h5ad, GeoJSON (QuPath) and the "
                        "virtual proteins as an OME-TIFF on the H&E grid (50 named channels; QuPath, napari).")

    def on_keep(label, view, request: gr.Request):
        sess, eng = session(request)
        text, view = h.keep_regions(view, label)
        return view, text, *render(sess, eng, view)

    def on_save(view, request: gr.Request):
        sess, _ = session(request)
        if not view.annotations:
            return None, "No annotations yet: keep some regions first."
        path = save_geojson(view.annotations, sess.folder / "exports")
        return store.serve_all(sess, [(path, path.name)], slot="annotations"), \
            f"Saved {len(view.annotations)} annotation(s) as GeoJSON (opens in QuPath; load it here again later)."

    def on_load_annotations(file, view, request: gr.Request):
        sess, eng = session(request)
        if not file:
            return view, "Choose a GeoJSON file.", *render(sess, eng, view)
        try:
            path = store.claim_uploads(sess.owner, [file])[0]
        except UploadClaimError as err:
            return view, public_error(err), *render(sess, eng, view)
        try:
            text, view = h.load_annotations(view, path.read_bytes(), eng.slide_names())
        except (ValueError, OSError) as err:
            text = f"Could not load it: {public_error(err)}"
        finally:
            store.release_upload(path)
        return view, text, *render(sess, eng, view)

    live = getattr(engine, "live", None) is not None  # serve follows its collection: keep the picker fresh
    # every callback: lone surrogates cleaned from what the browser sent, unexpected errors told publicly
    (on_load, on_unload, on_tick, on_post, on_answer, on_threshold, on_routes, on_slide, on_second, on_region,
     on_like, on_upload, on_export, on_keep, on_save, on_load_annotations) = map(guarded, (
        on_load, on_unload, on_tick, on_post, on_answer, on_threshold, on_routes, on_slide, on_second, on_region,
        on_like, on_upload, on_export, on_keep, on_save, on_load_annotations))
    names = engine.slide_names()
    start_view = h.new_view(engine, cfg)
    opening_chat = opening()[0] or (waiting if callable(answered) else [])
    lo, hi = cfg.threshold_range
    with gr.Blocks(title=cfg.title, analytics_enabled=False,
                   delete_cache=(int(cfg.cleanup_interval_s), int(cfg.session_ttl_s))) as app:
        app.spotwhisper_sessions = store
        app.spotwhisper_viewer = registry
        state = gr.State(start_view, time_to_live=cfg.session_ttl_s)
        known = gr.State(names)
        gr.Markdown(f"## {cfg.title} — search H&E slides with free text")
        status = gr.Markdown(build_line(), elem_id="build-status")
        timer = gr.Timer(1.0 if callable(answered) else 3.0, active=build_status is not None or callable(answered) or live)
        with gr.Row():
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(value=opening_chat, elem_id="chat", height=520, label="chat")
                msg = gr.Textbox(value=example if not opening_chat else "", elem_id="query", label="ask", lines=1,
                                 placeholder=examples[0] if examples else "", submit_btn=True)
                asked = gr.Textbox(visible=False)
                gr.Examples(examples, inputs=msg, label="examples")
            with gr.Column(scale=3):
                with gr.Row():
                    picker = gr.Dropdown(choices=names, value=start_view.slide, label="slide", elem_id="slide-picker")
                    picker2 = gr.Dropdown(choices=[NONE, *names], value=NONE, label="side by side with",
                                          elem_id="second-picker")
                with gr.Row(equal_height=True):
                    viewer = viewer_component("main")
                    with gr.Column(visible=False) as second_box:
                        viewer2 = viewer_component("second")
                caption = gr.Markdown(elem_id="map-caption")
                with gr.Row():
                    thr = gr.Slider(lo, hi, value=start_view.threshold, step=cfg.threshold_step, elem_id="threshold",
                                    label="threshold (relevance, log-odds; the colour bar's scale)")
                    routes = gr.CheckboxGroup(list(cfg.route_groups), value=list(cfg.route_groups), elem_id="routes",
                                              label="routes (ticked = answered and fused)")
        with gr.Row():
            gallery = gr.Gallery(label="top tiles (full resolution)", elem_id="tiles", columns=4, height=300)
            with gr.Column():
                evidence = gr.Dataframe(label="genes and proteins behind the highlighted region (or separating A and B)",
                                        elem_id="evidence",
                                        interactive=False, max_height=300)
                regions = gr.Dataframe(label="regions", elem_id="regions", interactive=False, max_height=200)
                like = gr.Button("find more like this (the region in focus, on every slide)", elem_id="find-like")
        an, up, ex = annotations_box(), upload_box(), export_box()

        shown = [viewer, second_box, viewer2, caption, gallery, evidence, regions, routes, thr]
        on_map = {"show_progress_on": [viewer]}
        app.load(on_load, [chatbot, state], [state, chatbot, picker, *shown], **on_map)
        app.unload(on_unload)
        timer.tick(on_tick, [known, chatbot, state], [status, picker, picker2, known, timer, chatbot, state, *shown],
                   show_progress="hidden")
        msg.submit(on_post, [msg, chatbot], [chatbot, msg, asked], queue=False, show_progress="hidden").then(
            on_answer, [asked, chatbot, state], [chatbot, state, picker, *shown], api_name="chat", **on_map)
        thr.input(on_threshold, [thr, state], [state, *shown], trigger_mode="always_last", **on_map)
        routes.input(on_routes, [routes, state], [state, *shown], trigger_mode="always_last", **on_map)
        picker.input(on_slide, [picker, state], [state, *shown], api_name="slide", **on_map)
        picker2.input(on_second, [picker2, state], [state, *shown], **on_map)
        viewer.region(on_region, [chatbot, state], [chatbot, state, *shown], **on_map)
        viewer2.region(on_region, [chatbot, state], [chatbot, state, *shown], **on_map)
        like.click(on_like, [chatbot, state], [chatbot, state, picker, *shown], api_name="like", **on_map)
        an.keep.click(on_keep, [an.label, state], [state, an.status, *shown], **on_map)
        an.save.click(on_save, [state], [an.files, an.status])
        an.file.upload(on_load_annotations, [an.file, state], [state, an.status, *shown], **on_map)
        up.button.click(on_upload, [up.image, up.spots, up.name, up.mpp, up.keep, state], [up.status, state, picker, *shown],
                        concurrency_limit=cfg.upload_concurrency, concurrency_id="upload", api_name="upload",
                        show_progress_on=[up.status])
        ex.button.click(on_export, [state], [ex.files, ex.status], api_name="export", show_progress_on=[ex.status])
    return app


def launch(engine: SearchEngine, host: str = "127.0.0.1", port: int | None = 7860, example: str | None = None,
           cfg: UIConfig | None = None, block: bool = True, quiet: bool = False, answered=None,
           build_status: Callable | None = None) -> gr.Blocks:
    """Serve the app on ``http://host:port``; with ``block=False`` return at once (tests), else
    serve until interrupted. Returns the launched Blocks (``.close()`` stops it; the session
    sweeper stops with the process). ``answered``/``build_status``: see :func:`build_app`."""
    import torch

    from starlette.middleware import Middleware

    cfg = cfg or load_ui_config()
    torch.set_num_threads(cfg.torch_threads)
    store = SessionStore(cfg)
    store.sweep()  # what an earlier server left behind
    registry = ViewerRegistry()
    app = build_app(engine, cfg, example, store, answered, build_status, registry)
    app.queue(default_concurrency_limit=cfg.concurrency_limit)  # sessions run in parallel; uploads one at a time
    store.start_sweeper()
    if not quiet:
        print(f"SpotWhisper UI on http://{host}:{port or 7860} (session data in {store.root}); Ctrl+C stops it")
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet, show_error=False,
               max_file_size=f"{cfg.max_upload_mb}mb", ssr_mode=False, theme=gr.themes.Soft(), css=CSS + viewer_css(),
               app_kwargs={"middleware": [Middleware(FileAccessMiddleware, store=store)], "routes": registry.routes()})
    return app
