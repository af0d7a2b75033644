"""LangChain through langchain-core's own interfaces: standard test suites, loaders, and an LCEL RAG chain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import VectorStore
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import RetrieversIntegrationTests, VectorStoreIntegrationTests

from indexers.langchain import TailorEmbeddings, TailorRetriever, TailorVectorStore, push_documents

DOMAIN = "lc-leases"
FACTS = [
    Document(
        id="rent",
        page_content="The monthly rent for the office is 4,500 euros.",
        metadata={"source": "lease.txt", "year": 2024},
    ),
    Document(
        id="deposit",
        page_content="The tenant pays a deposit of two months of rent.",
        metadata={"source": "lease.txt", "year": 2024},
    ),
    Document(
        id="notice",
        page_content="Either party may end the lease with sixty days of written notice.",
        metadata={"source": "terms.txt", "year": 2023},
    ),
    Document(
        page_content="Photosynthesis turns light into chemical energy in plants.",
        metadata={"source": "biology.txt", "pages": [1, 2]},
    ),
]
_URL: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def seeded(server) -> None:
    """A domain fed by LangChain documents, as a loader's output would be."""
    _URL["base"] = server.url
    results = push_documents(FACTS, DOMAIN, server.url)
    assert [r["status"] for r in results] == ["created"] * 4


# -- the standard suites ---------------------------------------------------------------------------
class TestVectorStoreStandard(VectorStoreIntegrationTests):
    """langchain-tests' suite on a fresh collection per test (DeterministicFakeEmbedding, size 6)."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:
        store = TailorVectorStore(tmp_path / "collection", self.get_embeddings())
        yield store
        store.close()


class TestRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[TailorRetriever]:
        return TailorRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"base_url": _URL["base"], "domain": DOMAIN}

    @property
    def retriever_query_example(self) -> str:
        return "lease rent"


# -- Tailor's own behaviour ------------------------------------------------------------------------
def test_vector_store_with_the_real_embedder_filters_and_modes(tmp_path: Path) -> None:
    emb = TailorEmbeddings()
    store = TailorVectorStore(tmp_path / "c", emb)
    store.add_documents(FACTS[:3])
    assert store.similarity_search("How much is the rent?", k=1)[0].id == "rent"
    assert [d.id for d in store.similarity_search("rent", k=3, filter={"year": 2023})] == ["notice"]
    assert store.similarity_search("written notice", k=1, mode="bm25")[0].id == "notice"
    doc, score = store.similarity_search_with_relevance_scores("deposit", k=1)[0]
    assert doc.id == "deposit" and 0 < score <= 1
    # a long document is chunked; get_by_ids gives it back whole
    long = " ".join(f"Clause {i} sets the duty number {i} of the tenant." for i in range(120))
    store.add_texts([long], ids=["long"])
    assert len(store.collection.store.chunk_texts("long")) > 1
    assert store.get_by_ids(["long"])[0].page_content.startswith("Clause 0 ")
    # the embeddings are the service's: same vectors as the collection's embedder
    assert emb.embed_query("rent") == pytest.approx(emb.embedder.embed_query("rent").tolist(), abs=1e-6)
    store.delete(None)
    assert store.similarity_search("rent", k=5) == []
    store.close()


def test_retriever_returns_sources_and_honours_filters(server) -> None:
    r = TailorRetriever(base_url=server.url, domain=DOMAIN, k=2)
    docs = r.invoke("What is the monthly rent?")
    top = docs[0]
    assert (
        top.id == "rent" and top.metadata["document_id"] == "rent" and top.metadata["source"] == "lease.txt"
    )
    assert top.metadata["score"] > 0 and "chunk_id" in top.metadata and "location" in top.metadata
    assert [d.id for d in r.invoke("rent", filter={"source": "terms.txt"})] == ["notice"]
    assert (
        r.invoke("light energy", k=1, mode="bm25")[0].metadata["pages"] == "[1, 2]"
    )  # nested metadata as JSON
    with pytest.raises(httpx.HTTPStatusError, match="filter"):
        r.invoke("rent", filter={"source": {"$regex": "x"}})


def test_lcel_chain_with_chat_openai_answers_from_retrieved_passages(server) -> None:
    retriever = TailorRetriever(base_url=server.url, domain=DOMAIN, k=2)
    llm = ChatOpenAI(
        model="legal",
        base_url=f"{server.url}/v1",
        api_key="unused",
        temperature=0,
        max_tokens=40,
        max_retries=0,
    )
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from these passages:\n{context}"), ("human", "{question}")]
    )

    def numbered(docs: list[Document]) -> str:
        return "\n".join(f"[{i}] {d.page_content}" for i, d in enumerate(docs, 1))

    answer_chain = prompt | llm | StrOutputParser()
    chain = {"docs": retriever, "question": RunnablePassthrough()} | RunnablePassthrough.assign(
        answer=lambda x: answer_chain.invoke({"context": numbered(x["docs"]), "question": x["question"]})
    )
    out = chain.invoke("What is the monthly rent for the office?")
    assert out["docs"][0].id == "rent"
    assert "4,500" in out["answer"] or "4500" in out["answer"], out["answer"]
