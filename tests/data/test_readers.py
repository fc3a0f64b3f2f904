"""Every reader gives the same plain-Python rows (data/readers.py); a bad source is one line."""

import gzip
import json

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhfkit.data.readers import read_rows
from rlhfkit.errors import UserError

CONV = [{"id": "a", "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
         "chosen": [{"role": "assistant", "content": "Hello."}],
         "rejected": [{"role": "assistant", "content": "Go away."}]},
        {"id": "b", "prompt": [{"role": "user", "content": "2+2?"}],
         "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}]
FLAT = [{"prompt": "say hi", "chosen": " hi", "rejected": " no", "id": "1"},
        {"prompt": "count: a b", "chosen": " 2", "rejected": "", "id": "02"}]


def _write(kind: str, records: list[dict], tmp_path):
    if kind == "jsonl":
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif kind == "jsonl.gz":
        path = tmp_path / "d.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    elif kind == "json array":
        path = tmp_path / "d.json"
        path.write_text("  \n" + json.dumps(records, indent=2))
    elif kind == "json.gz array":
        path = tmp_path / "d.json.gz"
        path.write_bytes(gzip.compress(json.dumps(records).encode()))
    elif kind == "json lines named .json":
        path = tmp_path / "d.json"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif kind == "parquet":
        path = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(records), path)
    elif kind == "parquet named .jsonl":
        path = tmp_path / "d.jsonl"
        pq.write_table(pa.Table.from_pylist(records), path)
    elif kind == "csv":
        path = tmp_path / "d.csv"
        pd.DataFrame(records).to_csv(path, index=False)
    elif kind == "datasets":
        path = tmp_path / "ds"
        datasets.Dataset.from_list(records).save_to_disk(str(path))
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "json array", "json.gz array", "json lines named .json",
                                  "parquet", "parquet named .jsonl", "datasets"])
def test_every_reader_gives_the_same_nested_rows(kind, tmp_path):
    rows = [row for _, row in read_rows(_write(kind, CONV, tmp_path))]
    assert rows == CONV
    assert type(rows[0]["prompt"]) is list and type(rows[0]["prompt"][0]) is dict


@pytest.mark.parametrize("kind", ["jsonl", "json array", "parquet", "csv", "datasets"])
def test_every_reader_gives_the_same_string_rows_and_labels_them(kind, tmp_path):
    found = list(read_rows(_write(kind, FLAT, tmp_path)))
    assert [row for _, row in found] == FLAT  # CSV: "02" stays a string, "" stays ""
    assert [where for where, _ in found] == ([1, 2] if kind == "jsonl" else ["row 1", "row 2"])


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    for name in ("d.jsonl", "d.json", "d.csv"):
        path = tmp_path / name
        body = ("prompt\nhi\n" if name.endswith("csv") else json.dumps([{"prompt": "hi"}]) if name.endswith("json")
                else '{"prompt": "hi"}\n')
        path.write_bytes(b"\xef\xbb\xbf" + body.encode())
        assert [row for _, row in read_rows(path)] == [{"prompt": "hi"}], name


def test_a_dataset_dict_reads_train_by_default_and_the_split_asked_for(tmp_path):
    path = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(FLAT[:1]),
                          "test": datasets.Dataset.from_list(FLAT[1:])}).save_to_disk(str(path))
    assert [r for _, r in read_rows(path)] == FLAT[:1]
    assert [r for _, r in read_rows(path, split="test")] == FLAT[1:]
    with pytest.raises(UserError, match=r"dd: --split valid: no such split \(splits: train, test\)"):
        list(read_rows(path, split="valid"))


def test_a_dataset_dict_without_train_asks_for_a_split(tmp_path):
    path = tmp_path / "dd"
    datasets.DatasetDict({"prefs": datasets.Dataset.from_list(FLAT)}).save_to_disk(str(path))
    with pytest.raises(UserError, match=r"without a 'train' split: choose one with --split \(prefs\)"):
        list(read_rows(path))


def test_field_maps_columns_onto_our_names(tmp_path):
    path = _write("parquet", [{"question": "q?", "good": "y", "bad": "n", "prompt": "other"}], tmp_path)
    rows = [r for _, r in read_rows(path, fields=["prompt=question", "chosen=good", "rejected=bad"])]
    assert rows == [{"prompt": "q?", "chosen": "y", "rejected": "n"}]


@pytest.mark.parametrize("fields, expected", [
    (["answer=good"], "--field 'answer=good': unknown field 'answer'"),
    (["prompt"], "--field 'prompt': expected NAME=COLUMN"),
    (["prompt=question"], "d.parquet: --field prompt=question: no column 'question' (columns: prompt, chosen"),
])
def test_bad_field_mappings_are_one_line(fields, expected, tmp_path):
    path = _write("parquet", FLAT, tmp_path)
    with pytest.raises(UserError) as info:
        list(read_rows(path, fields=fields))
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content, name, expected", [
    (bytes(range(256)), "d.jsonl", "d.jsonl:1: not UTF-8 text (a binary file?"),
    (b"\x1f\x8b\x08garbage", "d.jsonl.gz", "d.jsonl.gz:1: cannot read"),
    (b"PAR1 not really parquet", "d.parquet", "d.parquet: cannot read as Parquet"),
    (b'[{"prompt": "a"}, ', "d.json", "d.json:1: invalid JSON"),
    (b'{"prompt": "a"}', "d.json", None),
    (b'"text"', "d.json", "d.json:1: expected a JSON object, got a string"),
    (b'[{"prompt": "a"}, 3]', "d.json", "d.json:row 2: expected a JSON object, got a number"),
    (b'a,b\n1,2,3\n', "d.csv", "d.csv: cannot read as CSV"),
])
def test_bad_sources_are_one_line(content, name, expected, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    if expected is None:
        assert list(read_rows(path)) == [(1, {"prompt": "a"})]
        return
    with pytest.raises(UserError) as info:
        list(read_rows(path))
    assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_folder_that_is_no_dataset_is_one_line(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="folder: is a directory but not a `datasets` save_to_disk folder"):
        list(read_rows(tmp_path / "folder"))
    with pytest.raises(UserError, match="nope: no such file"):
        list(read_rows(tmp_path / "nope"))
