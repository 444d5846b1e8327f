"""Reference and evaluation text: bundled corpora, user files, token windows."""

from excise.data.corpora import Document, load_documents, split_documents
from excise.data.windows import DataSpec, token_windows

__all__ = ["DataSpec", "Document", "load_documents", "split_documents", "token_windows"]
