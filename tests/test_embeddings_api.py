"""``/v1/embeddings`` through the openai client and LangChain's ``OpenAIEmbeddings``."""

from __future__ import annotations

import httpx
import numpy as np
import openai
from langchain_openai import OpenAIEmbeddings

from tests.test_errors import assert_error

TEXTS = [
    "The tenant pays the rent monthly.",
    "Le locataire paie le loyer chaque mois.",
    "Photosynthesis needs light.",
]


def embedder_name(http: httpx.Client) -> str:
    cards = [m for m in http.get("/v1/models").json()["data"] if m["kind"] == "embedding"]
    assert len(cards) == 1 and cards[0]["max_model_len"] == 256
    return cards[0]["id"]


def test_vectors_match_the_knowledge_store_embedder(server, http: httpx.Client, oai: openai.OpenAI) -> None:
    name = embedder_name(http)
    # the openai client asks for base64 by default and decodes it; float must give the same numbers
    b64 = oai.embeddings.create(model=name, input=TEXTS)
    floats = oai.embeddings.create(model=name, input=TEXTS, encoding_format="float")
    a = np.array([d.embedding for d in b64.data])
    b = np.array([d.embedding for d in floats.data])
    assert a.shape == (3, 384) and np.allclose(a, b, atol=1e-6)
    assert [d.index for d in b64.data] == [0, 1, 2] and b64.model == name
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    # the same embedder as the domains' stores: identical vectors, and meaning survives translation
    store = server.server.config.app.state.tailor.knowledge.embedder.embed(TEXTS)
    assert np.allclose(a, store, atol=1e-5)
    sim = a @ a.T
    assert sim[0, 1] > sim[0, 2]
    assert b64.usage.prompt_tokens == b64.usage.total_tokens > 3 * 3
    # a single string, token ids of the embedder's own vocabulary, and a domain name as the model
    one = oai.embeddings.create(model="legal", input=TEXTS[0], encoding_format="float")
    assert np.allclose(one.data[0].embedding, a[0], atol=1e-5)
    ids = server.server.config.app.state.tailor.knowledge.embedder.tokenizer(
        TEXTS[0], add_special_tokens=False
    )["input_ids"]
    by_ids = oai.embeddings.create(model=name, input=[ids], encoding_format="float")
    assert np.allclose(by_ids.data[0].embedding, a[0], atol=1e-4)


def test_langchain_openai_embeddings_work_unchanged(server, http: httpx.Client) -> None:
    lc = OpenAIEmbeddings(
        model=embedder_name(http),
        base_url=f"{server.url}/v1",
        api_key="unused",
        check_embedding_ctx_length=False,  # it would tokenize with OpenAI's tiktoken vocabulary
        max_retries=0,
    )
    docs = lc.embed_documents(TEXTS)
    query = lc.embed_query("When is the rent due?")
    assert len(docs) == 3 and len(query) == 384
    assert int(np.argmax(np.array(docs) @ np.array(query))) in (0, 1)


def test_embedding_limits(http: httpx.Client) -> None:
    name = embedder_name(http)
    post = lambda **body: http.post("/v1/embeddings", json={"model": name, **body})  # noqa: E731
    long = "word " * 400
    err = assert_error(post(input=long), 400, "invalid_value")
    assert "at most 256" in err["message"] and "truncate_prompt_tokens" in err["message"]
    cut = post(input=long, truncate_prompt_tokens=-1).json()
    assert cut["usage"]["prompt_tokens"] == 256
    assert post(input=long, truncate_prompt_tokens=10).json()["usage"]["prompt_tokens"] == 12
    assert_error(post(input=""), 400, "invalid_value")
    assert_error(post(input=[""]), 400, "invalid_value")
    assert_error(post(input=["a"] * 2049), 422, "invalid_value")
    assert_error(post(input=[[10**7]]), 400, "invalid_value")
    assert_error(post(input="a", dimensions=128), 400, "invalid_value")
    assert_error(post(input="a", encoding_format="int8"), 422, "invalid_value")
    assert_error(post(input="a", truncate_prompt_tokens=1000), 400, "invalid_value")
    assert_error(http.post("/v1/embeddings", json={"model": "nope", "input": "a"}), 404, "model_not_found")
    assert post(input="still fine").status_code == 200
