"""Many clients at once: the tokenizer race of issue 25 (row 4), and 20 browsers × 5 queries on the real server.

Fast tokenizers keep padding/truncation state per call, so one used from two threads at once can
hand a batch back unpadded ("Unable to create tensor …"); every use must go through the
encoder's ``_tok_lock``. On the server, 20 raw clients (own cookie, own session hash) ask 5
questions each, all at once: every answer must succeed, quote its own question and no other
client's, and the pictures it names must be that client's files (fetchable with its cookie only).
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from tests.security_support import RawClient, outputs, running_app

#: one distinct word per client, added to its questions: an answer showing another's word is a mix-up
WORDS = ["lobe", "edge", "margin", "core", "rim", "nest", "sheet", "cluster", "focus", "patch", "field", "zone",
         "band", "island", "strand", "cord", "ring", "streak", "layer", "pocket"]
TERMS = ["tumour", "stroma", "immune infiltrate", "adipose tissue", "fibrous stroma"]


@pytest.fixture(scope="module")
def text_model():
    from spotwhisper.language import TextExpressionModel

    return TextExpressionModel.from_pretrained()


def _waits_for(lock, call) -> None:
    """``call()`` in another thread must wait while this thread holds ``lock``, and finish once it is released."""
    done = threading.Event()
    with lock:  # another thread is tokenizing a padded batch
        worker = threading.Thread(target=lambda: (call(), done.set()))
        worker.start()
        assert not done.wait(0.5), "the tokenizer was used without its lock"
    assert done.wait(20)
    worker.join()


def _never_fail(call, rounds: int, n_threads: int = 8) -> None:
    """``call(thread, round)`` from ``n_threads`` threads at once, ``rounds`` times each: no exception."""
    errors: list[str] = []

    def run(i: int) -> None:
        for k in range(rounds):
            try:
                call(i, k)
            except Exception as err:  # noqa: BLE001 - collected for the assertion
                errors.append(f"{type(err).__name__}: {err}"[:160])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_illegible_words_waits_for_the_tokenizer_lock(text_model):
    from spotwhisper.language.transcriptome_zeroshot import illegible_words

    _waits_for(text_model.text_encoder._tok_lock, lambda: illegible_words(text_model, "tertiary lymphoid structures"))


def test_image_text_models_tokenize_under_their_lock(tmp_path):
    """PLIP/CONCH text towers (when a collection has them) embed one batch at a time, whatever the threads."""
    from spotwhisper.encoders.clip_models import load_plip
    from tests.test_clip_models import build_tiny_plip

    model = load_plip(str(build_tiny_plip(tmp_path / "plip")))
    _waits_for(model._text_lock, lambda: model.encode_text(["invasive carcinoma"]))
    _never_fail(lambda i, k: model.encode_text(["in" * (1 + (i + k) % 7), "carcinoma and stroma " * (1 + k % 4)]), 20)


def test_threads_checking_and_embedding_queries_never_fail(text_model):
    """8 threads: word checks (the search's readability test) interleaved with padded batch embeddings."""
    from spotwhisper.language.transcriptome_zeroshot import illegible_words

    def check_and_embed(i: int, k: int) -> None:
        q = f"{TERMS[(i + k) % len(TERMS)]} {WORDS[i]} {k}"
        illegible_words(text_model, q + " near the invasive front of the carcinoma")
        text_model.text_encoder.encode([q, q + " x", "a longer sentence that needs padding " * (1 + k % 3)])

    _never_fail(check_and_embed, 30)


def test_twenty_clients_five_queries_each(mini_collection, tmp_path):
    from spotwhisper.search.engine import open_engine
    from spotwhisper.ui.chat import message_text

    index_dir, name = mini_collection
    with running_app(open_engine(name, index_dir=index_dir), tmp_path / "data", gallery_tiles=2) as srv:
        clients = [RawClient(srv["port"]) for _ in WORDS]
        answers: dict[int, list[tuple[str, dict]]] = {i: [] for i in range(len(clients))}
        barrier = threading.Barrier(len(clients))
        failures: list[str] = []

        def user(i: int) -> None:
            barrier.wait()
            for k in range(5):
                query = f"{TERMS[(i + k) % len(TERMS)]} {WORDS[i]}"
                try:
                    answers[i].append((query, clients[i].call("chat", [f"show me {query}", [], None], timeout=300)))
                except Exception as err:  # noqa: BLE001 - a broken connection is a failed answer too
                    failures.append(f"client {i}: {type(err).__name__}: {err}")

        threads = [threading.Thread(target=user, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures[:3]
        store = srv["store"]
        for i, done in answers.items():
            assert len(done) == 5
            own = store.get(clients[i].session)
            for query, msg in done:
                assert msg.get("success"), (i, query, msg)
                text = message_text(outputs(msg)[0][-1]["content"])
                assert f"'{query}'" in text, (i, query, text[:200])
                assert "could not" not in text and "went wrong" not in text, text[:200]
                assert not [w for j, w in enumerate(WORDS) if j != i and f" {w}'" in text]  # no one else's question
                for tile in outputs(msg)[7]:
                    path = Path(tile["image"]["path"])
                    assert own.outbox in path.parents  # this client's folder only
        # pictures of the last answers: the owner fetches them, a neighbour cannot
        for i in (0, 7, 19):
            path = outputs(answers[i][-1][1])[7][0]["image"]["path"]
            assert clients[i].fetch(path)[0] == 200
            assert clients[(i + 1) % len(clients)].fetch(path)[0] == 403


def test_streamed_answers_reach_the_client_as_sent():
    """Answers in steps go out as edit lists against the step before; applied by the client they must give
    what the server sent. Gradio's own diff garbles lists of lists that shrink at two levels (region outlines
    on a map with fewer regions) — wrong outlines in a browser, IndexError in gradio_client."""
    import copy

    import gradio.utils
    from gradio_client.utils import apply_diff

    from spotwhisper.ui.diffs import stream_diff

    old = {"regions": [{"id": 1, "polygons": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}, {"id": 2, "polygons": [[[5, 5]]]}],
           "data": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}
    new = {"regions": [{"id": 1, "polygons": [[[0, 0], [2, 0]]]}], "data": [[1, 2], [4, 5]]}
    rng = random.Random(0)

    def rand(depth: int):
        if depth == 0 or rng.random() < 0.2:
            return rng.choice([rng.randint(0, 3), "ab"[: rng.randint(0, 2)], None])
        if rng.random() < 0.6:
            return [rand(depth - 1) for _ in range(rng.randint(0, 4))]
        return {k: rand(depth - 1) for k in rng.sample("abcd", rng.randint(0, 3))}

    pairs = [(old, new)] + [(rand(4), rand(4)) for _ in range(300)]
    for a, b in pairs:
        assert apply_diff(copy.deepcopy(a), stream_diff(a, b)) == b
    from spotwhisper.ui import diffs

    gradio_diff = diffs.replaced or gradio.utils.diff  # Gradio's own, whether or not an app installed ours
    assert gradio_diff is not stream_diff
    try:
        got = apply_diff(copy.deepcopy(old), gradio_diff(old, new))
    except IndexError:
        got = "IndexError"
    assert got != new  # the cause: why the app replaces it
