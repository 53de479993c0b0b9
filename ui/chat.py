"""The chat: free text → an answer in sentences with numbers, and a new :class:`~spotwhisper.ui.handlers.View`.

Without a language model, :func:`route_intent` reads the message itself — search ("show me
tertiary lymphoid structures", "where is PD-L1 high?"), compare two queries ("compare tumour and
stroma", "tumour vs stroma": two colours), contrast ("tumour minus stroma": one map), explain
("which genes explain the highlighted region?", "explain region 2") and compare slides ("find
slides with immune infiltrate") — and calls the matching handler.

:func:`respond_stream` yields the answer in steps where the work has steps: a line saying what is
being done at once, then the map and regions, then the explanation of the regions.

With an OpenAI-compatible endpoint configured (``configs/ui.yaml`` ``llm`` or
``SPOTWHISPER_LLM_*``), messages go to the model with the current hit statistics and top genes
as context and two tools, ``search`` and ``explain``, that run the same handlers
(:class:`~spotwhisper.ui.llm_client.ChatClient`: no redirects, no credentials or endpoint bodies
shown to users). If the endpoint fails, the built-in router answers and says so.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Literal

from spotwhisper.search.engine import SearchEngine
from spotwhisper.search.query import CONTRAST_SPLIT

from . import handlers as h
from .config import UIConfig
from .display import evidence_table, regions_frame
from .files import public_error
from .llm_client import ChatClient, LLMError

IntentKind = Literal["empty", "help", "search", "compare", "contrast", "explain", "slides"]

EMPTY_REPLY = "Type what to look for, e.g. 'show me tertiary lymphoid structures' or 'where is PD-L1 high?'."
HELP_REPLY = (
    "Ask in plain words:\n"
    "- search: 'show me tertiary lymphoid structures', 'where is PD-L1 high?'\n"
    "- compare two things (two colours): 'compare tumour and stroma', 'immune infiltrate vs stroma'\n"
    "- contrast (one map of the difference): 'invasive cancer minus stroma'\n"
    "- explain: 'which genes explain the highlighted region?', 'explain region 2'\n"
    "- slides: 'find slides with immune infiltrate'\n"
    "The threshold slider and route toggles change the map without searching again; click a numbered "
    "region on the slide to explain it."
)

_HELP = re.compile(r"^(help|\?|what can (you|i) do|how does (this|it) work|how do i use (this|it))\b", re.IGNORECASE)
_EXPLAIN = re.compile(r"\b(explain\w*|why|which (genes?|proteins?|markers?)|what (genes?|proteins?|markers?)|"
                      r"genes? (behind|driving)|drives?)\b", re.IGNORECASE)
_REGION = re.compile(r"\bregion\s*#?\s*(\d+)\b", re.IGNORECASE)
_SLIDES = re.compile(r"\b(slides|sections|collection)\b|\b(which|what|rank|list|find|compare)\b.*\b(slide|section)\b", re.IGNORECASE)
_SLIDES_FILLER = re.compile(
    r"^(please\s+)?((find|show|list|rank|compare|give|search)(\s+me)?(\s+the|\s+all)?\s+)?((which|what)\s+)?"
    r"(slides?|sections?)(\s+(with|by|for|that\s+have|that\s+show|showing|containing|where|having|has|have|show|shows|contain|contains))*\s+"
    r"|\s+(across|in|over)\s+(all\s+|the\s+|every\s+)*(slides?|sections?|collection)$", re.IGNORECASE)
_COMPARE = re.compile(r"^(please\s+)?compare\s+(?P<a>.+?)\s+(and|with|to|vs\.?|versus|against)\s+(?P<b>.+)$", re.IGNORECASE)
_VERSUS = re.compile(r"^(?P<a>.+?)\s+(vs\.?|versus)\s+(?P<b>.+)$", re.IGNORECASE)
_SEARCH_FILLER = re.compile(
    r"^(please\s+)?(can\s+you\s+|could\s+you\s+)?(show(\s+me)?|find|highlight|search(\s+for)?|look\s+for|locate|mark|"
    r"display|where\s+(is|are)(\s+the)?|are\s+there(\s+any)?|is\s+there(\s+any)?|any)\s+", re.IGNORECASE)
_SEARCH_TAIL = re.compile(r"\s+(on|in)\s+(this|the)\s+(slide|section|image)$|\s+here$", re.IGNORECASE)


@dataclass
class Intent:
    """What a message asks for; ``query``/``negative`` are the texts to search (contrast: A, B)."""

    kind: IntentKind
    query: str = ""
    negative: str = ""
    region: int | None = None


def _clean(text: str) -> str:
    return " ".join(text.split()).strip(" ?!.")


def route_intent(message: str) -> Intent:
    """Classify a chat message without a language model (see the module docstring)."""
    text = _clean(message or "")
    if not text:
        return Intent("empty")
    if _HELP.match(text):
        return Intent("help")
    if _EXPLAIN.search(text):
        m = _REGION.search(text)
        return Intent("explain", region=int(m.group(1)) if m else None)
    if _SLIDES.search(text):
        query = _clean(_SLIDES_FILLER.sub(" ", text))
        return Intent("slides", query=query or text)
    m = _COMPARE.match(text) or _VERSUS.match(text)
    if m:
        return Intent("compare", query=_clean(m.group("a")), negative=_clean(m.group("b")))
    parts = CONTRAST_SPLIT.split(text, maxsplit=1)
    if len(parts) == 2 and parts[0].strip() and parts[1].strip():
        return Intent("contrast", query=_clean(_SEARCH_FILLER.sub("", parts[0])), negative=_clean(parts[1]))
    query = _clean(_SEARCH_TAIL.sub("", _SEARCH_FILLER.sub("", text)))
    return Intent("search", query=query or text)


def rule_reply(engine: SearchEngine, view: h.View, message: str, cfg: UIConfig) -> tuple[str, h.View]:
    """Answer ``message`` with the built-in router; a query the engine refuses leaves ``view`` as it was."""
    intent = route_intent(message)
    try:
        if intent.kind == "empty":
            return EMPTY_REPLY, view
        if intent.kind == "help":
            return HELP_REPLY, view
        if intent.kind == "explain":
            return h.run_explain(engine, view, cfg, intent.region)
        if intent.kind == "slides":
            return h.run_compare_slides(engine, view, intent.query, cfg)
        if intent.kind == "compare":
            return h.run_compare(engine, view, intent.query, intent.negative, cfg)
        if intent.kind == "contrast":
            return h.run_contrast(engine, view, intent.query, intent.negative, cfg)
        return h.run_search(engine, view, intent.query, cfg)
    except (ValueError, KeyError) as err:  # QueryError is a ValueError
        return could_not(err), view


def could_not(err: Exception) -> str:
    """The chat's answer when an action fails: the error's sentence without server paths."""
    return f"I could not do that: {public_error(err)}"


def working_line(engine: SearchEngine, view: h.View, message: str, cfg: UIConfig) -> str:
    """What is being done for ``message``, said at once (before the answer is ready)."""
    if cfg.llm.enabled:
        return "Asking the language model…"
    intent = route_intent(message)
    where = view.slide if view.slide else "the slides"
    if view.second and view.second != view.slide:
        where = f"{view.slide} and {view.second}"
    return {
        "search": f"Searching '{intent.query}' on {where}…",
        "slides": f"Searching '{intent.query}' on every slide ({len(engine.slide_names())})…",
        "compare": f"Comparing '{intent.query}' and '{intent.negative}' on {view.slide}…",
        "contrast": f"Searching '{intent.query}' minus '{intent.negative}' on {where}…",
        "explain": "Looking at the genes and proteins of the region…",
    }.get(intent.kind, "")


def respond_stream(engine: SearchEngine, view: h.View, message: str, history: list[dict], cfg: UIConfig,
                   client: ChatClient | None = None):
    """Answer ``message`` in steps → yields ``(text, view, done)``: a working line first (when there
    is work), then — for a search — the regions and map before their explanation, then the whole answer."""
    line = working_line(engine, view, message, cfg) if (message or "").strip() else ""
    if line:
        yield line, view, False
    intent = route_intent(message)
    if cfg.llm.enabled or intent.kind != "search":
        text, view = respond(engine, view, message, history, cfg, client)
        yield text, view, True
        return
    try:
        text, view = h.run_search(engine, view, intent.query, cfg, explain=False)
    except (ValueError, KeyError) as err:
        yield could_not(err), view, True
        return
    hits = view.hits()
    if hits is not None and hits.regions:
        yield text + "\n(explaining the regions…)", view, False
        view = h.explain_all(engine, view)
        text = h.describe_result(view, cfg)
    yield text, view, True


# -- OpenAI-compatible language model ----------------------------------------------------------
TOOLS = [
    {"type": "function", "function": {
        "name": "search",
        "description": "Score every spot of the slide on screen (scope 'slide') or of every slide (scope 'collection') "
                       "for a free-text query; 'A minus B' contrasts two. Returns regions, spot counts, scores and top genes.",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string", "description": "what to find, e.g. 'tertiary lymphoid structures'"},
            "scope": {"type": "string", "enum": ["slide", "collection"]}},
            "required": ["query"]}}},
    {"type": "function", "function": {
        "name": "explain",
        "description": "Genes and proteins that set a highlighted region apart from the rest of the slide.",
        "parameters": {"type": "object", "properties": {
            "region": {"type": "integer", "description": "region number on the map (default 1, the strongest)"}}}}},
]
SYSTEM_PROMPT = (
    "You are SpotWhisper, an assistant that searches H&E slides of breast cancer by their inferred transcriptome, "
    "virtual protein panel and image. Use the tools to answer: `search` lights up matching regions, `explain` "
    "lists the genes and proteins behind a region. Quote the numbers the tools return (regions, spots, mm², "
    "scores, genes); never invent them. Scores are relevance log-odds against reference descriptions of tissue (absolute, the same whichever slides are searched); 'no region' means nothing matches. Answer briefly."
)


def context_text(engine: SearchEngine, view: h.View, cfg: UIConfig) -> str:
    """The state a language model is given: slides, slide on screen, hit statistics, top genes."""
    lines = [f"Slides: {', '.join(engine.slide_names())}. On screen: {view.slide}. Threshold {view.threshold:g}."]
    if view.shown is not None:
        lines.append("Last result:\n" + h.describe_result(view, cfg))
        ev = evidence_table(view.explained or (view.hits().explanation if view.hits() else None), cfg.table_rows)
        if len(ev):
            lines.append("Top genes/proteins of the explained region: " + ", ".join(
                f"{r.name} ({r.kind}, +{r.difference:.2f})" for r in ev.itertuples(index=False)))
    return "\n".join(lines)


def _tool_payload(view: h.View, text: str, cfg: UIConfig) -> str:
    hits = view.hits()
    ev = evidence_table(view.explained or (hits.explanation if hits else None), cfg.table_rows)
    return json.dumps({"answer": text, "slide": view.slide,
                       "regions": regions_frame(hits).to_dict("records"),
                       "evidence": ev.to_dict("records")}, default=float)


def run_tool(engine: SearchEngine, view: h.View, name: str, arguments: str | dict, cfg: UIConfig) -> tuple[str, h.View]:
    """Execute one tool call → ``(JSON result for the model, new view)``; errors become ``{"error": …}``."""
    try:
        args = json.loads(arguments or "{}") if isinstance(arguments, str) else dict(arguments or {})
        if not isinstance(args, dict):
            raise TypeError(f"the arguments of {name!r} are not a JSON object")
        if name == "search":
            query = str(args.get("query", ""))
            if args.get("scope") == "collection":
                text, view = h.run_compare_slides(engine, view, query, cfg)
            else:
                text, view = h.run_search(engine, view, query, cfg)
        elif name == "explain":
            text, view = h.run_explain(engine, view, cfg, int(args["region"]) if args.get("region") else None)
        else:
            return json.dumps({"error": f"unknown tool {name!r}; tools: search, explain"}), view
    except (ValueError, KeyError, TypeError) as err:
        return json.dumps({"error": public_error(err)}), view
    return _tool_payload(view, text, cfg), view


def _shown(content, limit: int) -> str:
    """The model's answer as shown in the chat: plain text, at most ``limit`` characters."""
    text = message_text(content).strip() or "(the language model sent an empty answer)"
    return text if len(text) <= limit else text[:limit] + f"… (cut at {limit:,} characters, llm.max_answer_chars)"


def llm_reply(engine: SearchEngine, view: h.View, message: str, history: list[dict], cfg: UIConfig,
              client: ChatClient | None = None) -> tuple[str, h.View]:
    """Answer with the language model, letting it call ``search`` / ``explain``: at most
    ``llm.max_tool_rounds`` rounds and ``llm.max_tool_calls`` tool calls in all (calls beyond it get an
    error back instead of running), the whole answer within ``llm.total_timeout_s``."""
    limits = cfg.llm
    client = client or ChatClient(limits)
    deadline = time.monotonic() + limits.total_timeout_s
    msgs = [{"role": "system", "content": SYSTEM_PROMPT + "\n\nCurrent state:\n" + context_text(engine, view, cfg)}]
    msgs += [{"role": m["role"], "content": message_text(m.get("content"))} for m in history[-limits.history_turns:]
             if m.get("role") in ("user", "assistant")]
    msgs.append({"role": "user", "content": message})
    last_tool, ran, refused = "", 0, 0
    for _ in range(limits.max_tool_rounds + 1):
        reply = client.complete(msgs, TOOLS, deadline)
        calls = reply.get("tool_calls") or []
        if not calls:
            return _shown(reply.get("content"), limits.max_answer_chars), view
        msgs.append({"role": "assistant", "content": reply.get("content") or "", "tool_calls": calls})
        for call in calls:
            fn = call.get("function") or {}
            if ran >= limits.max_tool_calls or time.monotonic() >= deadline:
                refused += 1
                result = json.dumps({"error": f"no more tool calls for this message (at most {limits.max_tool_calls}); "
                                              "answer with the results you have"})
            else:
                ran += 1
                result, view = run_tool(engine, view, str(fn.get("name", "")), fn.get("arguments", "{}"), cfg)
                last_tool = json.loads(result).get("answer", "") or last_tool
            msgs.append({"role": "tool", "tool_call_id": str(call.get("id", "")), "content": result})
    why = (f"asked for more than {limits.max_tool_calls} tool calls (only {ran} ran)" if refused
           else f"did not answer within {limits.max_tool_rounds} tool rounds")
    return (last_tool or "The language model kept calling tools without answering.") + \
        f"\n(The language model {why}.)", view


def message_text(content) -> str:
    """Plain text of a chat message's content (a string, or Gradio's list of content blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, (list, tuple)):
        return " ".join(message_text(c) for c in content)
    return "" if content is None else str(content)


def respond(engine: SearchEngine, view: h.View, message: str, history: list[dict], cfg: UIConfig,
            client: ChatClient | None = None) -> tuple[str, h.View]:
    """The chat's answer to ``message``: the language model when configured, else the built-in router."""
    if not (message or "").strip():
        return EMPTY_REPLY, view
    if not cfg.llm.enabled:
        return rule_reply(engine, view, message, cfg)
    try:
        return llm_reply(engine, view, message, history, cfg, client)
    except LLMError as err:
        text, view = rule_reply(engine, view, message, cfg)
        return f"{text}\n(The language model did not answer — {err}; this answer comes from the built-in router.)", view
