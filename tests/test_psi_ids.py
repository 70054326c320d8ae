"""Tests of prepare_ids: typed ID encoding, exclusions with a report, duplicates, normalising."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab_kit.errors import FedlabError
from fedlab_kit.psi.ids import IdError, IdReport, prepare_ids


def _enc(value: Any) -> bytes:
    """The documented encoding of an int or str ID (normalize=None)."""
    if isinstance(value, int):
        return b"i:" + str(value).encode()
    return b"s:" + value.encode("utf-8")


# ------------------------------------------------------------------ typing and normalising
def test_int_and_str_are_different_ids_by_default() -> None:
    keys, rows, report = prepare_ids([42, "42"])
    assert keys == [b"i:42", b"s:42"]
    assert rows.tolist() == [0, 1]
    assert report.types == {"int": 1, "str": 1}
    assert "mixed ID types" in report.summary()


def test_normalize_str_makes_int_and_str_the_same_id() -> None:
    with pytest.raises(IdError, match="1 duplicate"):
        prepare_ids([42, "42"], normalize="str")
    keys, rows, report = prepare_ids([42, "42"], normalize="str", duplicates="first")
    assert keys == [b"s:42"]
    assert rows.tolist() == [0]
    assert report.excluded == {"duplicate": 1}
    assert report.n_used == 1 and report.n_input == 2


def test_integral_floats_count_as_ints() -> None:
    keys, _, report = prepare_ids([3.0, np.float64(-7.0), np.float32(5.0)])
    assert keys == [b"i:3", b"i:-7", b"i:5"]
    assert report.types == {"int": 3}
    with pytest.raises(IdError, match="1 duplicate"):
        prepare_ids([42, 42.0])
    keys, _, _ = prepare_ids([42.0, "42"], normalize="str", duplicates="first")
    assert keys == [b"s:42"]


def test_pandas_int_column_with_missing_value_stays_integer() -> None:
    s = pd.Series([1, None, 3])  # pandas makes this float64 with NaN
    assert s.dtype == np.float64
    keys, rows, report = prepare_ids(s)
    assert keys == [b"i:1", b"i:3"]
    assert rows.tolist() == [0, 2]
    assert report.excluded == {"null": 1}


def test_nullable_integer_and_string_dtypes() -> None:
    keys, rows, report = prepare_ids(pd.Series([1, None, 3], dtype="Int64"))
    assert keys == [b"i:1", b"i:3"] and rows.tolist() == [0, 2]
    assert report.excluded == {"null": 1}
    keys, rows, report = prepare_ids(pd.Series(["a", None, "b"], dtype="string"))
    assert keys == [b"s:a", b"s:b"] and rows.tolist() == [0, 2]
    assert report.excluded == {"null": 1}


# ------------------------------------------------------------------------- exclusions
def test_unusable_values_are_excluded_counted_and_shown() -> None:
    values = ["a", None, float("nan"), pd.NA, "", b"\xff\xfe", 2.5, np.float64(0.1), 7,
              b"ok", None]
    keys, rows, report = prepare_ids(values)
    assert keys == [b"s:a", b"i:7", b"s:ok"]
    assert rows.tolist() == [0, 8, 9]
    assert report.n_input == 11
    assert report.n_used == 3
    assert report.n_excluded == 8
    assert report.excluded == {"null": 4, "empty": 1, "non-UTF-8 bytes": 1,
                               "non-integer float": 2}
    assert sum(report.excluded.values()) == report.n_input - report.n_used
    assert report.examples["null"] == ["row 1: None", "row 2: nan", "row 3: <NA>",
                                       "row 10: None"]
    assert report.examples["empty"] == ["row 4: ''"]
    assert report.examples["non-UTF-8 bytes"] == ["row 5: b'\\xff\\xfe'"]
    assert report.examples["non-integer float"][0] == "row 6: 2.5"
    text = report.summary()
    assert text.startswith("3 of 11 rows take part")
    for why, n in report.excluded.items():
        assert f"{n} excluded as {why}" in text
    assert "row 5" in text
    assert "mixed ID types" in text  # str and int both present


def test_examples_are_capped_but_counts_are_not() -> None:
    _, _, report = prepare_ids([None] * 20 + ["x"])
    assert report.excluded == {"null": 20}
    assert len(report.examples["null"]) == 5
    assert "(e.g. ['row 0: None', 'row 1: None', 'row 2: None'])" in report.summary()


def test_non_utf8_string_and_boolean_are_excluded() -> None:
    keys, _, report = prepare_ids(["\ud800", True, np.bool_(False), "x"])
    assert keys == [b"s:x"]
    assert report.excluded == {"non-UTF-8 string": 1, "boolean": 2}


def test_clean_input_has_a_plain_summary() -> None:
    _, _, report = prepare_ids(["a", "b"])
    assert report.summary() == "2 of 2 rows take part"
    assert report.excluded == {}
    assert isinstance(report, IdReport)


def test_all_excluded_gives_empty_keys() -> None:
    keys, rows, report = prepare_ids([None, "", float("nan")])
    assert keys == [] and rows.tolist() == [] and rows.dtype == np.int64
    assert report.n_used == 0 and report.n_input == 3
    keys, rows, report = prepare_ids([])
    assert keys == [] and len(rows) == 0 and report.n_input == 0


def test_valid_utf8_bytes_are_strings() -> None:
    keys, _, _ = prepare_ids([b"abc", "x"])
    assert keys == [b"s:abc", b"s:x"]
    with pytest.raises(IdError):
        prepare_ids([b"abc", "abc"])


# ------------------------------------------------------------------------- duplicates
def test_duplicates_are_refused_with_count_and_examples() -> None:
    with pytest.raises(IdError) as info:
        prepare_ids(["a", "b", "a", "c", "b", "a", 5, 5])
    msg = str(info.value)
    assert "4 duplicate IDs" in msg
    assert "'a'" in msg and "'b'" in msg and "5" in msg
    assert "duplicates='first'" in msg
    assert isinstance(info.value, FedlabError)


def test_duplicates_first_keeps_first_occurrence() -> None:
    keys, rows, report = prepare_ids(["a", "b", "a", "c", "b", "a"], duplicates="first")
    assert keys == [b"s:a", b"s:b", b"s:c"]
    assert rows.tolist() == [0, 1, 3]
    assert report.excluded == {"duplicate": 3}
    examples = [str(e) for e in report.examples["duplicate"]]
    assert len(examples) == 3
    assert "a" in examples[0] and "b" in examples[1] and "a" in examples[2]
    assert report.n_used == 3 and report.n_input == 6
    assert "3 excluded as duplicate" in report.summary()


# ---------------------------------------------------------------------- normalisation
def test_strip_normalisation() -> None:
    keys, rows, report = prepare_ids(["  abc ", "abc", "\tX\n", "   "], normalize="strip",
                                     duplicates="first")
    assert keys == [b"s:abc", b"s:X"]
    assert rows.tolist() == [0, 2]
    assert report.excluded == {"duplicate": 1, "empty": 1}
    # without normalisation whitespace is significant and a blank string is an ID
    keys, _, _ = prepare_ids(["  abc ", "abc", "   "])
    assert keys == [b"s:  abc ", b"s:abc", b"s:   "]


def test_lower_normalisation_also_strips() -> None:
    keys, rows, _ = prepare_ids([" ABC", "abc", "Straße"], normalize="lower", duplicates="first")
    assert keys == [b"s:abc", "s:straße".encode()]
    assert rows.tolist() == [0, 2]
    with pytest.raises(IdError, match="1 duplicate"):
        prepare_ids(["ABC", "abc"], normalize="lower")
    keys, _, _ = prepare_ids(["ABC", "abc"])
    assert keys == [b"s:ABC", b"s:abc"]


def test_strip_and_lower_map_ints_to_strings_too() -> None:
    keys, _, _ = prepare_ids([42, " 42 "], normalize="strip", duplicates="first")
    assert keys == [b"s:42"]


@pytest.mark.parametrize("kwargs", [{"duplicates": "last"}, {"duplicates": None},
                                    {"normalize": "upper"}, {"normalize": ""},
                                    {"normalize": "STR"}])
def test_bad_option_values_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(IdError, match=next(iter(kwargs))):
        prepare_ids(["a"], **kwargs)


# ---------------------------------------------------------------------- input types
@pytest.mark.parametrize("make", [list, tuple, np.array, pd.Series, pd.Index, iter,
                                  lambda v: pd.Series(v, index=[10, 20, 30, 40])],
                         ids=["list", "tuple", "ndarray", "series", "index", "iterator",
                              "series-with-index"])
def test_containers(make: Any) -> None:
    keys, rows, report = prepare_ids(make(["d", "b", "c", "a"]))
    assert keys == [b"s:d", b"s:b", b"s:c", b"s:a"]
    assert rows.tolist() == [0, 1, 2, 3]  # positions, not index labels
    assert report.n_input == 4


def test_numpy_int_array() -> None:
    keys, _, report = prepare_ids(np.array([3, 1, 2], dtype=np.int32))
    assert keys == [b"i:3", b"i:1", b"i:2"]
    assert report.types == {"int": 3}
    keys, _, _ = prepare_ids([np.int64(3), np.uint8(1)])
    assert keys == [b"i:3", b"i:1"]


def test_numpy_float_array_with_nan() -> None:
    keys, rows, report = prepare_ids(np.array([1.0, np.nan, 2.0, 2.5]))
    assert keys == [b"i:1", b"i:2"]
    assert rows.tolist() == [0, 2]
    assert report.excluded == {"null": 1, "non-integer float": 1}


def test_unicode_ids_round_trip() -> None:
    ids = ["客户-ü-😀", "Ελλάδα", "نص", "e\u0301", "\u00e9"]
    keys, rows, _ = prepare_ids(ids)
    assert [k[2:].decode("utf-8") for k in keys] == ids
    assert keys[0] == b"s:" + "客户-ü-😀".encode()
    # combining sequence and precomposed character are different IDs (no NFC folding)
    assert len(set(keys)) == 5
    assert rows.tolist() == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- property
ID_VALUES = st.one_of(st.integers(-10**20, 10**20), st.integers(-5, 5), st.text(max_size=4),
                      st.sampled_from(["a", "A", " a", "1", "-1"]))


@settings(max_examples=150, deadline=None)
@given(values=st.lists(ID_VALUES, max_size=40))
def test_rows_increase_and_point_at_unique_encodings(values: list[Any]) -> None:
    keys, rows, report = prepare_ids(values, duplicates="first")
    assert rows.dtype == np.int64
    assert len(keys) == len(rows) == report.n_used
    assert bool(np.all(np.diff(rows) > 0))
    assert len(set(keys)) == len(keys)
    assert [_enc(values[r]) for r in rows] == keys
    usable = [v for v in values if v != ""]
    assert set(keys) == {_enc(v) for v in usable}
    for r, k in zip(rows, keys, strict=True):  # the first occurrence is kept
        assert all(_enc(v) != k for v in values[:r] if v != "")
    assert report.n_input == len(values)
    assert report.excluded.get("empty", 0) == values.count("")
    assert report.excluded.get("duplicate", 0) == len(usable) - len(keys)
    if report.excluded.get("duplicate"):
        with pytest.raises(IdError, match=f"{len(usable) - len(keys)} duplicate"):
            prepare_ids(values)
    else:
        assert prepare_ids(values)[0] == keys


def test_type_counts_are_of_the_ids_that_take_part() -> None:
    _, _, report = prepare_ids([1, 1, 1, "a"], duplicates="first")
    assert report.types == {"int": 1, "str": 1} and report.n_used == 2


def test_strip_and_lower_make_every_id_text() -> None:
    keys, _, _ = prepare_ids([42, " A "], normalize="lower")
    assert keys == [b"s:42", b"s:a"]
    keys, _, _ = prepare_ids([42, " A "], normalize="strip")
    assert keys == [b"s:42", b"s:A"]
