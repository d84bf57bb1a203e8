"""The MiniLM embedder, mechanically, with a tiny stand-in model built at test time.

The real all-MiniLM-L6-v2 cannot be downloaded here (and AILB never downloads it). What is
checked is the path around it: :class:`ailb.vectors.chroma.MiniLM` loads ``onnx/tokenizer.json``
and ``onnx/model.onnx`` from its folder (the only two files ChromaDB's ``ONNXMiniLM_L6_V2``
reads; its other four are only looked for by its download check, which MiniLM bypasses), feeds
the model ``input_ids``, ``attention_mask`` and ``token_type_ids`` and mean-pools and normalises
the first output. The stand-in: a BERT-style word-level tokenizer of 28 entries and an ONNX
graph whose "last hidden state" is a row of a fixed 8-dimension table per token, so every
expected vector can be computed here with numpy.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime
import pytest
import trio
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from ailb.errors import ConfigError
from ailb.knowledge import RoutedEmbeddings, make_embedder
from ailb.supervisor import Running, run
from ailb.vectors.chroma import MiniLM
from tests.conftest import auth, make_settings

DIM = 8
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
TOPICS = {  # word -> the axis it points along (plus a little noise)
    "cat": 0, "dog": 0, "kitten": 0, "puppy": 0, "pet": 0,
    "snow": 1, "ice": 1, "winter": 1, "cold": 1,
    "sun": 2, "beach": 2, "summer": 2, "hot": 2, "sand": 2,
    "sat": 3, "ran": 3, "mat": 3, "park": 3,
}
STOPWORDS = ("the", "a", "on", "in", "is", "and")
VOCAB = {token: i for i, token in enumerate((*SPECIALS, *TOPICS, *STOPWORDS))}


def embedding_table() -> np.ndarray[Any, np.dtype[np.float32]]:
    """One row per token. [PAD] is huge: a padded position that leaked into the pooling would
    swing the vector. [UNK], [CLS], [SEP] and stop words are small, so content words decide."""
    rng = np.random.default_rng(7)
    table = rng.normal(scale=0.05, size=(len(VOCAB), DIM))
    for word, axis in TOPICS.items():
        table[VOCAB[word]] = rng.normal(scale=0.2, size=DIM)
        table[VOCAB[word], axis] += 1.0
    table[VOCAB["[PAD]"]] = 50.0
    return table.astype(np.float32)


TABLE = embedding_table()


def build_model(model_dir: Path) -> Path:
    """Write the stand-in ``onnx/tokenizer.json`` and ``onnx/model.onnx``; returns model_dir."""
    folder = model_dir / "onnx"
    folder.mkdir(parents=True)
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", VOCAB["[SEP]"]),
                                                         ("[CLS]", VOCAB["[CLS]"]))
    tokenizer.save(str(folder / "tokenizer.json"))

    ids = ("input_ids", "attention_mask", "token_type_ids")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["words"]),
         helper.make_node("Gather", ["types", "token_type_ids"], ["segments"]),  # zeros
         helper.make_node("Add", ["words", "segments"], ["last_hidden_state"])],
        "tiny_minilm",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ids],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       ["batch", "seq", DIM])],
        [numpy_helper.from_array(TABLE, "table"),
         numpy_helper.from_array(np.zeros((2, DIM), np.float32), "types")])
    # opset 17 / IR 8: old enough for any onnxruntime ChromaDB accepts
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(folder / "model.onnx"))
    return model_dir


def reference(model_dir: Path, text: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    """What MiniLM must return for ``text``: the mean of its tokens' rows (``[CLS]`` and
    ``[SEP]`` included), normalised."""
    ids = Tokenizer.from_file(str(model_dir / "onnx" / "tokenizer.json")).encode(text).ids
    assert ids[0] == VOCAB["[CLS]"] and ids[-1] == VOCAB["[SEP]"]
    mean = TABLE[ids].astype(np.float64).mean(axis=0)
    return mean / np.linalg.norm(mean)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.dot(a, b))  # both normalised


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return build_model(tmp_path / "minilm")


@pytest.fixture
def feeds(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every input ONNX Runtime is given, in order."""
    seen: list[dict[str, Any]] = []
    original = onnxruntime.InferenceSession.run

    def spy(self: Any, output_names: Any, input_feed: dict[str, Any], *args: Any,
            **kwargs: Any) -> Any:
        seen.append({name: np.array(value) for name, value in input_feed.items()})
        return original(self, output_names, input_feed, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", spy)
    return seen


class Downloaded(AssertionError):
    pass


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection can be opened, and ChromaDB's model download fails loudly."""
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise Downloaded(f"network use: {args[1:]!r}")

    monkeypatch.setattr(ONNXMiniLM_L6_V2, "_download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(httpx, "stream", refuse)


TEXTS = ("The cat sat on the mat.", "snow", "A puppy ran in the park and the kitten sat.")


def test_each_vector_is_the_normalised_mean_of_its_tokens(
        model_dir: Path, feeds: list[dict[str, Any]]) -> None:
    minilm = MiniLM(model_dir)
    assert minilm.id == "minilm-l6-v2"
    for text in TEXTS:
        [vector] = minilm.vectors([text])
        assert len(vector) == DIM and all(isinstance(x, float) for x in vector)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)
        assert np.allclose(vector, reference(model_dir, text), atol=1e-6)
    # padded to the text itself, not to ChromaDB's 256 tokens
    tokens = [len(Tokenizer.from_file(str(model_dir / "onnx" / "tokenizer.json"))
                  .encode(t).ids) for t in TEXTS]
    assert [f["input_ids"].shape for f in feeds] == [(1, n) for n in tokens]
    for feed in feeds:
        assert set(feed) == {"input_ids", "attention_mask", "token_type_ids"}
        assert all(v.dtype == np.int64 for v in feed.values())
        assert (feed["attention_mask"] == 1).all() and (feed["token_type_ids"] == 0).all()


def test_texts_that_share_words_are_closer_than_unrelated_ones(model_dir: Path) -> None:
    minilm = MiniLM(model_dir)

    def vector(text: str) -> list[float]:
        return minilm.vectors([text])[0]

    cat, dog, snow = (vector("the cat sat on the mat"), vector("a dog sat on a mat"),
                      vector("cold snow and ice in winter"))
    assert cosine(cat, dog) > 0.5 > cosine(cat, snow)
    assert cosine(cat, vector("the cat sat on the mat")) == pytest.approx(1.0)
    # words outside the vocabulary are [UNK]: they do not break anything
    assert len(vector("zebra xylophone quantum")) == DIM


def test_a_batch_of_texts_of_different_lengths_gives_each_its_own_vector(
        model_dir: Path, feeds: list[dict[str, Any]]) -> None:
    minilm = MiniLM(model_dir)
    alone = [minilm.vectors([t])[0] for t in TEXTS]
    together = minilm.vectors(list(TEXTS))
    assert len(together) == len(TEXTS)
    for one, other, text in zip(alone, together, TEXTS, strict=True):
        assert np.allclose(one, other, atol=1e-6)  # the [PAD] row is huge: no leak into it
        assert np.allclose(other, reference(model_dir, text), atol=1e-6)
    longest = max(f["input_ids"].shape[1] for f in feeds[:len(TEXTS)])
    assert all(f["input_ids"].shape[1] <= longest < 256 for f in feeds[len(TEXTS):])


def test_the_model_is_never_downloaded(model_dir: Path, offline: None) -> None:
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    # The folder holds only the two files ChromaDB reads; ChromaDB itself would download its
    # archive for want of config.json, vocab.txt, ... (refused here)
    class Plain(ONNXMiniLM_L6_V2):
        DOWNLOAD_PATH = model_dir

    with pytest.raises(Downloaded):
        Plain()(["the cat"])
    assert sorted(p.name for p in (model_dir / "onnx").iterdir()) == ["model.onnx",
                                                                      "tokenizer.json"]
    [vector] = MiniLM(model_dir).vectors(["the cat"])
    assert np.allclose(vector, reference(model_dir, "the cat"), atol=1e-6)
    assert sorted(p.name for p in model_dir.rglob("*")) == ["model.onnx", "onnx",
                                                            "tokenizer.json"]


def routed() -> RoutedEmbeddings:
    def no_router() -> Any:
        raise AssertionError("the minilm embedder never routes")

    return RoutedEmbeddings(no_router)


@pytest.mark.parametrize("lacking", ["model.onnx", "tokenizer.json", "folder"])
def test_make_embedder_refuses_a_folder_without_the_model(
        tmp_path: Path, model_dir: Path, lacking: str) -> None:
    if lacking == "folder":
        model_dir = tmp_path / "nowhere"
    else:
        (model_dir / "onnx" / lacking).unlink()
    settings = make_settings(tmp_path, EMBEDDINGS={"embedder": "minilm",
                                                   "model_dir": str(model_dir)})
    with pytest.raises(ConfigError) as refused:
        make_embedder(settings, routed())
    assert refused.value.key == "EMBEDDINGS.model_dir"
    assert str(refused.value).startswith("EMBEDDINGS.model_dir is unusable")
    assert ("model.onnx" if lacking == "folder" else lacking) in str(refused.value)


async def test_make_embedder_builds_a_threaded_minilm(tmp_path: Path, model_dir: Path) -> None:
    settings = make_settings(tmp_path, EMBEDDINGS={"embedder": "minilm",
                                                   "model_dir": str(model_dir)})
    embedder = make_embedder(settings, routed())
    assert embedder.id == "minilm-l6-v2"
    [vector] = await embedder.embed(["the cat sat on the mat"])
    assert np.allclose(vector, reference(model_dir, "the cat sat on the mat"), atol=1e-6)


async def test_memory_is_embedded_with_minilm_and_a_switch_to_lexical_is_refused(
        nursery: trio.Nursery, tmp_path: Path, model_dir: Path) -> None:
    settings = make_settings(
        tmp_path, EMBEDDINGS={"embedder": "minilm", "model_dir": str(model_dir)},
        MEMORY={"recent_tokens": 1, "relevant_min_score": 0.5})  # recall needs the vectors
    headers = {**auth(), "x-session-id": "pets"}

    def body(text: str) -> dict[str, Any]:
        return {"model": "echo-1", "messages": [{"role": "user", "content": text}]}

    async with httpx.AsyncClient(timeout=15) as http:
        async with trio.open_nursery() as life:
            running: Running = await life.start(run, settings)
            url = running.http_url
            memory = running.services.memory
            assert memory is not None
            for written, text in enumerate(("The cat sat on the mat.",
                                            "Cold snow and ice in winter."), start=1):
                reply = await http.post(f"{url}/v1/chat/completions", json=body(text),
                                        headers=headers)
                assert reply.status_code == 200, reply.text
                with trio.fail_after(10):  # the writer embeds the turn with MiniLM
                    while memory.writer.written < written:
                        await trio.sleep(0.01)
            got = await http.get(f"{url}/v1/memory/pets", headers=auth())
            assert got.status_code == 200, got.text
            assert [t["messages"] for t in got.json()["turns"]] == [
                [{"role": "user", "content": text}, {"role": "assistant", "content": text}]
                for text in ("The cat sat on the mat.", "Cold snow and ice in winter.")]
            # both turns are older than the recent window: only the cat one is near enough
            reply = await http.post(f"{url}/v1/chat/completions",
                                    json=body("Did the kitten sit on the mat?"), headers=headers)
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-ailb-memory"] == "recent=0, recalled=1"
            running.request_shutdown()
    lexical = make_settings(tmp_path, MEMORY={"recent_tokens": 1})
    with pytest.raises(ConfigError) as refused:
        await nursery.start(run, lexical)
    assert "minilm-l6-v2" in str(refused.value) and "lexical-v1/2048" in str(refused.value)
