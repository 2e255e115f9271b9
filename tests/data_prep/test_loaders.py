from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from data_prep.loaders import (
    load_amazon,
    load_generic,
    load_generic_folder,
    load_ml100k_packaged,
    load_movielens,
)
from data_prep.schema import DataError
from q2rec.cli import main as q2rec


def test_packaged_ml100k_has_the_published_counts():
    ds = load_ml100k_packaged()
    assert len(ds.interactions) == 100_000
    assert ds.interactions["user_id"].nunique() == 943
    assert len(ds.items) == 1682
    assert list(ds.interactions.columns) == ["user_id", "item_id", "timestamp"]
    toy = ds.items.iloc[0]
    assert (toy["item_id"], toy["title"], toy["year"]) == ("1", "Toy Story", 1995)
    assert toy["genres"] == "Animation, Children's, Comedy"
    # source order is kept: the first row of the .inter file
    assert tuple(ds.interactions.iloc[0]) == ("196", "242", 881250949)
    assert ds.dropped.total == 0


def _write_grouplens_100k(folder):
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n")
    flags = ["0"] * 19
    comedy = list(flags)
    comedy[5] = "1"
    drama = list(flags)
    drama[8] = drama[1] = "1"
    (folder / "u.item").write_bytes(
        (f"10|Caf\xe9 Film (1995)|01-Jan-1995||http://x|{'|'.join(comedy)}\n"
         f"20|Other (1994)|||http://y|{'|'.join(drama)}\n").encode("latin-1")
    )  # fmt: skip


def test_grouplens_100k_folder(tmp_path):
    _write_grouplens_100k(tmp_path / "ml-100k")
    ds = load_movielens(tmp_path / "ml-100k")
    assert len(ds.interactions) == 3
    items = ds.items.set_index("item_id")
    assert items.loc["10", "title"] == "Café Film"
    assert items.loc["10", "genres"] == "Comedy"
    assert items.loc["20", "genres"] == "Action, Drama"
    assert items.loc["20", "year"] == 1994  # no release date: taken from the title


def test_grouplens_1m_folder(tmp_path):
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (d / "movies.dat").write_text(
        "1193::One Flew (1975)::Drama\n661::James (1996)::Animation|Children's|Musical\n"
    )
    ds = load_movielens(d)
    assert ds.name == "ml-1m"
    assert ds.items.set_index("item_id").loc["661", "genres"] == "Animation, Children's, Musical"
    assert ds.items.set_index("item_id").loc["1193", "year"] == 1975


def test_grouplens_1m_bad_line_names_file_and_line(tmp_path):
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3\n")
    (d / "movies.dat").write_text("1193::One Flew (1975)::Drama\n")
    with pytest.raises(DataError, match=r"ratings\.dat: line\(s\) \[2\]"):
        load_movielens(d)


def test_amazon_2014_python_literal_meta_and_gzip(tmp_path):
    reviews = tmp_path / "reviews.json.gz"
    with gzip.open(reviews, "wt") as fh:
        for r in [
            {
                "reviewerID": "U1",
                "asin": "A1",
                "unixReviewTime": 1300000000,
                "reviewText": "great",
                "summary": "ok",
            },
            {"reviewerID": "U1", "asin": "A2", "unixReviewTime": 1300000100, "reviewText": "meh"},
            {"reviewerID": "U2", "asin": "A9", "unixReviewTime": 1300000200, "reviewText": "unknown item"},
        ]:
            fh.write(json.dumps(r) + "\n")
    meta = tmp_path / "meta.json"
    meta.write_text(
        "{'asin': 'A1', 'title': 'Lip Balm', 'brand': 'Acme', 'categories': [['Beauty', 'Skin Care']]}\n"
        "{'asin': 'A2', 'categories': [['Beauty', 'Hair']], 'description': 'A comb.'}\n"
    )
    ds = load_amazon(reviews, meta, name="beauty")
    assert len(ds.interactions) == 2
    assert ds.dropped.total == 1 and "missing from" in next(iter(ds.dropped.counts))
    items = ds.items.set_index("item_id")
    assert items.loc["A1", "categories"] == "Beauty, Skin Care"
    assert items.loc["A2", "title"] == "Hair"  # no title: last category stands in, and it is counted
    assert ds.notes["untitled_items"] == 1
    assert ds.reviews.set_index("item_id").loc["A1", "review"] == "ok great"


def test_amazon_2018_json(tmp_path):
    reviews, meta = tmp_path / "r.json", tmp_path / "m.json"
    reviews.write_text(
        json.dumps({"reviewerID": "U", "asin": "B", "unixReviewTime": 1500000000, "overall": 5})
    )
    meta.write_text(json.dumps({"asin": "B", "title": "Desk", "category": ["Office", "Furniture"],
                                "description": ["Sturdy.", "Oak."], "brand": "Wood Co"}))  # fmt: skip
    ds = load_amazon(reviews, meta)
    row = ds.items.iloc[0]
    assert (row["title"], row["categories"], row["description"]) == (
        "Desk",
        "Office, Furniture",
        "Sturdy. Oak.",
    )


def test_amazon_review_missing_field(tmp_path):
    reviews, meta = tmp_path / "r.json", tmp_path / "m.json"
    reviews.write_text(json.dumps({"reviewerID": "U", "asin": "B"}))
    meta.write_text(json.dumps({"asin": "B", "title": "Desk"}))
    with pytest.raises(DataError, match=r"r\.json: line 1 lacks field\(s\) \['unixReviewTime'\]"):
        load_amazon(reviews, meta)


def _pair(tmp_path, inter: str, items: str):
    (tmp_path / "interactions.csv").write_text(inter)
    (tmp_path / "items.csv").write_text(items)
    return tmp_path / "interactions.csv", tmp_path / "items.csv"


def test_generic_with_column_mapping_and_iso_dates(tmp_path):
    i, m = _pair(
        tmp_path, "uid,iid,when\nu1,7,2020-01-02T00:00:00Z\nu1,8,2020-01-01\n", "iid,name\n7,Seven\n8,Eight\n"
    )
    ds = load_generic(
        i, m, columns={"user_id": "uid", "item_id": "iid", "timestamp": "when", "title": "name"}
    )
    assert ds.interactions["timestamp"].tolist() == [1577923200, 1577836800]
    assert ds.items["title"].tolist() == ["Seven", "Eight"]


def test_generic_parquet(tmp_path):
    pd.DataFrame({"user_id": [1, 1], "item_id": [2, 3], "timestamp": [5, 6]}).to_parquet(
        tmp_path / "i.parquet"
    )
    pd.DataFrame({"item_id": [2, 3], "title": ["a", "b"], "brand": ["x", None]}).to_parquet(
        tmp_path / "m.parquet"
    )
    ds = load_generic(tmp_path / "i.parquet", tmp_path / "m.parquet")
    assert ds.interactions["item_id"].tolist() == ["2", "3"]
    assert ds.items["brand"].tolist() == ["x", ""]


def test_missing_column_names_file_and_column(tmp_path):
    i, m = _pair(tmp_path, "user_id,item_id\n1,2\n", "item_id,title\n2,a\n")
    with pytest.raises(DataError, match=r"interactions\.csv: missing column\(s\) \['timestamp'\]"):
        load_generic(i, m)


def test_missing_title_column(tmp_path):
    i, m = _pair(tmp_path, "user_id,item_id,timestamp\n1,2,3\n", "item_id,name\n2,a\n")
    with pytest.raises(DataError, match=r"items\.csv: missing column\(s\) \['title'\]"):
        load_generic(i, m)


@pytest.mark.parametrize("which", ["interactions", "items"])
def test_empty_files(tmp_path, which):
    i, m = _pair(tmp_path, "user_id,item_id,timestamp\n1,2,3\n", "item_id,title\n2,a\n")
    target = i if which == "interactions" else m
    target.write_text("")
    with pytest.raises(DataError, match=rf"{which}\.csv: file is empty"):
        load_generic(i, m)


def test_header_only_file_is_empty(tmp_path):
    i, m = _pair(tmp_path, "user_id,item_id,timestamp\n", "item_id,title\n2,a\n")
    with pytest.raises(DataError, match=r"interactions\.csv: file is empty \(no data rows\)"):
        load_generic(i, m)


def test_unparsable_timestamp_names_column_and_values(tmp_path):
    i, m = _pair(tmp_path, "user_id,item_id,timestamp\n1,2,3\n1,2,yesterday\n", "item_id,title\n2,a\n")
    with pytest.raises(
        DataError, match=r"interactions\.csv: column 'timestamp' has 1 unparsable .*'yesterday'"
    ):
        load_generic(i, m)


def test_empty_id_is_an_error(tmp_path):
    i, m = _pair(tmp_path, "user_id,item_id,timestamp\n,2,3\n", "item_id,title\n2,a\n")
    with pytest.raises(DataError, match=r"column 'user_id' has 1 empty id"):
        load_generic(i, m)


def test_unknown_items_and_duplicates_are_counted_not_silent(tmp_path, caplog):
    i, m = _pair(
        tmp_path,
        "user_id,item_id,timestamp\n1,2,3\n1,2,3\n1,99,4\n1,98,5\n2,2,6\n",
        "item_id,title\n2,a\n2,again\n",
    )
    ds = load_generic(i, m)
    assert len(ds.interactions) == 2
    counts = ds.dropped.counts
    assert sum(v for k, v in counts.items() if "duplicate (user_id" in k) == 1
    assert sum(v for k, v in counts.items() if "points at items missing" in k) == 2
    assert sum(v for k, v in counts.items() if "duplicate item_id" in k) == 1
    assert ds.dropped.total == 4
    assert "dropped 2 rows" in caplog.text


def test_generic_folder_requires_both_files(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\n1,2,3\n")
    with pytest.raises(DataError, match="expected interactions.csv \\+ items.csv"):
        load_generic_folder(tmp_path)


def test_prepare_cli_reports_errors_cleanly(tmp_path, capsys):
    (tmp_path / "interactions.csv").write_text("user_id,item_id\n1,2\n")
    (tmp_path / "items.csv").write_text("item_id,title\n2,a\n")
    assert q2rec(["prepare", "--dataset", str(tmp_path), "--artifacts", str(tmp_path / "out")]) == 2
    assert "missing column(s) ['timestamp']" in capsys.readouterr().err


def test_prepare_cli_unknown_dataset(tmp_path, capsys):
    assert q2rec(["prepare", "--dataset", "nope", "--artifacts", str(tmp_path)]) == 2
    assert "--dataset 'nope'" in capsys.readouterr().err
