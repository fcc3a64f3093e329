"""The search tool: BM25 over a local corpus (a JSONL of documents), through the `bm25s` package; no network.

    index = SearchIndex("corpus.jsonl", k=3)     # one line per document: {"id": ..., "title": ..., "text": ...}
    GRPOTrainer(..., tools=[index.search])       # the bound method is the tool: search(query: str) -> str

The index is built once, in memory, when the SearchIndex is made (bm25s: sparse matrices, ~1 s per 100k short
documents). Each call returns the top-k documents that share a term with the query, best first, each as
"[id] title" and a snippet of its text cut to `snippet_chars`. `title` is optional; it is indexed with the text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""


def load_corpus(path: str | Path) -> list[Document]:
    """The documents of a JSONL file; a bad line is refused with its number and what it lacks."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"search corpus {path} does not exist. Fix: point the search tool's corpus at a JSONL "
                                f"file with one {{\"id\", \"title\" (optional), \"text\"}} object per line")
    documents, seen = [], set()
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number} is not JSON ({e.msg}). Fix: one JSON object per line") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or "id" not in row:
                raise ValueError(f"{path}:{number} needs an \"id\" and a string \"text\" (\"title\" is optional), "
                                 f"got {str(row)[:120]}")
            doc_id = str(row["id"])
            if doc_id in seen:
                raise ValueError(f"{path}:{number}: document id {doc_id!r} appears twice. Fix: give each a unique id")
            seen.add(doc_id)
            documents.append(Document(doc_id, row["text"], str(row.get("title") or "")))
    if not documents:
        raise ValueError(f"search corpus {path} has no documents")
    return documents


class SearchIndex:
    """A BM25 index over a corpus; its bound method ``search`` is the tool."""

    def __init__(self, corpus: str | Path | list[Document], k: int = 3, snippet_chars: int = 400,
                 stopwords: str | None = "en") -> None:
        import bm25s  # only runs that search pay its import

        if k < 1 or snippet_chars < 1:
            raise ValueError(f"SearchIndex needs k >= 1 and snippet_chars >= 1, got k={k}, "
                             f"snippet_chars={snippet_chars}")
        self.documents = list(corpus) if isinstance(corpus, list) else load_corpus(corpus)
        self.k, self.snippet_chars, self.stopwords = k, snippet_chars, stopwords
        self._bm25s = bm25s
        self._retriever = bm25s.BM25()
        texts = [f"{d.title}\n{d.text}" if d.title else d.text for d in self.documents]
        self._retriever.index(self._tokenize(texts), show_progress=False)

    def _tokenize(self, texts: list[str]) -> Any:
        return self._bm25s.tokenize(texts, stopwords=self.stopwords, show_progress=False)

    def ranked(self, query: str, k: int | None = None) -> list[tuple[Document, float]]:
        """The best ``k`` documents for ``query`` with their BM25 scores, best first; none share a term: []."""
        k = min(k or self.k, len(self.documents))
        tokens = self._bm25s.tokenize([query], stopwords=self.stopwords, return_ids=False, show_progress=False)
        if not tokens[0]:
            return []
        ids, scores = self._retriever.retrieve(tokens, k=k, show_progress=False)
        return [(self.documents[int(i)], float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]

    def search(self, query: str) -> str:
        """Search the document collection and return the best-matching passages.

        Args:
            query: Keywords or a question describing what to look for, e.g. "capital of France".

        Returns:
            The best matches, best first, each as "[id] title" followed by a passage of its text.
        """
        if not isinstance(query, str) or not query.strip():
            return "Error: the query is empty; give some keywords to search for"
        hits = self.ranked(query)
        if not hits:
            return f"No document matches {query!r}. Try other keywords."
        return "\n\n".join(self._show(doc) for doc, _ in hits)

    def _show(self, doc: Document) -> str:
        text = doc.text if len(doc.text) <= self.snippet_chars else doc.text[: self.snippet_chars].rstrip() + " ..."
        return f"[{doc.id}] {doc.title}\n{text}" if doc.title else f"[{doc.id}]\n{text}"
