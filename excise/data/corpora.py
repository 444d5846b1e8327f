"""Text that ships with installed packages, or that the user gives as a file.

Bundled sources (from the `gensim` wheel's test data):
- `wiki`: a 2016 English Wikipedia sample (107 articles after dropping redirects,
  CC BY-SA), wiki markup removed by gensim's `filter_wiki` plus the cleaning below.
- `news`: `lee_background.cor`, 300 short news stories, one per line.

Split rule: a document belongs to the evaluation split when the first byte of
SHA-256(title) is below 52 (about 20%), otherwise to calibration. The rule
depends only on the title, so it is stable across versions and machines and
no article is ever in both splits.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from excise.errors import ExciseError

Split = Literal["calibration", "evaluation", "all"]

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILE = "lee_background.cor"
EVALUATION_BYTE_THRESHOLD = 52  # of 256: about 20% of documents


@dataclass(frozen=True)
class Document:
    title: str
    text: str


def _gensim_test_data() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ExciseError("the bundled text needs the gensim package; run `make install`")
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"


_QUOTES = re.compile(r"'{2,}")
_HEADING = re.compile(r"^\s*=+\s*(.*?)\s*=+\s*$", re.MULTILINE)
_BLANKS = re.compile(r"\n{3,}")
_SPACES = re.compile(r"[ \t]{2,}")
_EMPTY_PARENS = re.compile(r"\(\s*[,;]?\s*\)")


def clean_wiki_text(raw: str) -> str:
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(raw)
    text = _QUOTES.sub("", text)
    text = _HEADING.sub(r"\1", text)
    text = _EMPTY_PARENS.sub("", text)
    text = _SPACES.sub(" ", text)
    return _BLANKS.sub("\n\n", text).strip()


@functools.lru_cache(maxsize=1)
def wiki_documents() -> tuple[Document, ...]:
    from gensim.corpora.wikicorpus import extract_pages

    with bz2.BZ2File(_gensim_test_data() / WIKI_FILE) as handle:
        pages = list(extract_pages(handle, filter_namespaces=("0",)))
    documents = (
        Document(title=title, text=clean_wiki_text(raw))
        for title, raw, _page_id in pages
        if not raw.lstrip().lower().startswith("#redirect")
    )
    return tuple(doc for doc in documents if len(doc.text) > 200)


@functools.lru_cache(maxsize=1)
def news_documents() -> tuple[Document, ...]:
    lines = (_gensim_test_data() / NEWS_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
    return tuple(Document(title=f"news-{i:03d}", text=line.strip()) for i, line in enumerate(lines) if line.strip())


def file_documents(path: Path) -> tuple[Document, ...]:
    """A `.jsonl` file (one object with a `text` field a line) or plain text (one document a line)."""
    path = Path(path)
    if not path.is_file():
        raise ExciseError(f"text file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ExciseError(f"{path} is not UTF-8 text ({error})") from error
    documents = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        text = _jsonl_text(path, number, line) if path.suffix == ".jsonl" else line.strip()
        documents.append(Document(title=f"{path.name}:{number}", text=text))
    if not documents:
        raise ExciseError(f"{path} contains no text; give one document a line (or JSONL with a 'text' field)")
    return tuple(documents)


def _jsonl_text(path: Path, number: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ExciseError(f"{path}:{number} is not valid JSON ({error.msg})") from error
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise ExciseError(f"{path}:{number} has no string field 'text'")
    return record["text"]


BUNDLED = {"wiki": wiki_documents, "news": news_documents}


def load_documents(source: str) -> tuple[Document, ...]:
    """`wiki`, `news`, `wiki+news`, or a path to a text/JSONL file."""
    if all(part in BUNDLED for part in source.split("+")):
        return tuple(doc for part in source.split("+") for doc in BUNDLED[part]())
    path = Path(source).expanduser()
    if path.suffix in {".txt", ".jsonl"} or path.exists():
        return file_documents(path)
    raise ExciseError(
        f"unknown text source {source!r}; use one of {', '.join(BUNDLED)} (joined with '+') or a .txt/.jsonl file"
    )


def in_evaluation_split(title: str) -> bool:
    return hashlib.sha256(title.encode()).digest()[0] < EVALUATION_BYTE_THRESHOLD


def split_documents(documents: tuple[Document, ...], split: Split) -> tuple[Document, ...]:
    if split == "all":
        return documents
    want_evaluation = split == "evaluation"
    return tuple(doc for doc in documents if in_evaluation_split(doc.title) == want_evaluation)
