import json

import pytest

from excise.data.corpora import (
    file_documents,
    in_evaluation_split,
    load_documents,
    news_documents,
    split_documents,
    wiki_documents,
)
from excise.errors import ExciseError


def test_wiki_sample_is_cleaned_of_markup():
    documents = wiki_documents()
    assert len(documents) > 100
    text = "\n".join(doc.text for doc in documents)
    for markup in ("'''", "[[", "]]", "{{", "}}", "==", "<ref"):
        assert markup not in text, markup
    assert "Anarchism is a political philosophy" in text


def test_news_corpus_has_300_stories():
    assert len(news_documents()) == 300


@pytest.mark.parametrize("source", ["wiki", "news"])
def test_split_is_disjoint_deterministic_and_about_a_fifth(source):
    documents = load_documents(source)
    evaluation = split_documents(documents, "evaluation")
    calibration = split_documents(documents, "calibration")
    assert {d.title for d in evaluation}.isdisjoint({d.title for d in calibration})
    assert len(evaluation) + len(calibration) == len(documents)
    assert 0.1 < len(evaluation) / len(documents) < 0.3
    assert evaluation == split_documents(load_documents(source), "evaluation")
    assert all(in_evaluation_split(d.title) for d in evaluation)


def test_combined_source():
    assert len(load_documents("wiki+news")) == len(wiki_documents()) + len(news_documents())


def test_user_text_and_jsonl_files(tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("first document\n\nsecond document\n")
    assert [d.text for d in file_documents(text)] == ["first document", "second document"]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two", "id": 2}) + "\n")
    assert [d.text for d in load_documents(str(jsonl))] == ["one", "two"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "\n \n", "contains no text"),
        ("bad.jsonl", "{not json}\n", "bad.jsonl:1 is not valid JSON"),
        ("missing.jsonl", '{"body": "x"}\n', "missing.jsonl:1 has no string field 'text'"),
    ],
)
def test_bad_user_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ExciseError, match=message):
        load_documents(str(path))


def test_unknown_source():
    with pytest.raises(ExciseError, match="unknown text source"):
        load_documents("c4")
