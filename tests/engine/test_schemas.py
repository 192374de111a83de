"""The annotation schema registry against the real EMAnnotationSchemas and caveclient 8.2.1.

``fixtures/schemas/<name>.json`` are real documents served by CAVE's schema service
(``JSONSchema().dump(get_schema(name)())``, emannotationschemas 5.26.3 with
marshmallow-jsonschema 0.10.0); ``_flat_columns.json`` lists every real type with its
flattened columns (``emannotationschemas.flatten.create_flattened_schema``, ``valid`` left out).
"""

from __future__ import annotations

import doctest
import json
import time
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from caveclient.tools.stage import StagedAnnotations
from caveclient.tools.table_manager import TableManager, get_col_info

from cavelab.server.annotations import schemas as schemas_module
from cavelab.server.annotations.schemas import (
    MAX_PROBLEMS,
    Column,
    Field,
    all_jsonschemas,
    get_schema,
    schema_names,
)
from cavelab.server.errors import InputError, NotFoundError

FIXTURES = Path(__file__).parent / "fixtures" / "schemas"
REAL_DOCS = {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("[!_]*.json"))}
REAL_FLAT = json.loads((FIXTURES / "_flat_columns.json").read_text())["types"]
NOT_REPRODUCED = {"derived_spatial_point", "derived_tag", "derived_numeric_value"}

SYN = get_schema("synapse")


def _syn_record(**kw):
    rec = {
        "pre_pt": {"position": [1, 2, 3]},
        "post_pt": {"position": [4, 5, 6]},
        "ctr_pt": {"position": [7, 8, 9]},
        "size": 10,
    }
    rec.update(kw)
    return rec


def _input_error(fn, *args, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------- registry
def test_registry_has_every_real_type_but_the_derived_ones():
    assert schema_names() == sorted(set(REAL_FLAT) - NOT_REPRODUCED)
    for name in [
        "synapse", "cell_type_local", "cell_type_reference", "bound_tag", "bound_double_tag",
        "bound_tag_user", "bound_tag_bool", "nucleus_detection", "proofread_status",
        "proofreading_boolstatus_user", "compartment_proofread_status", "reference_tag",
        "simple_reference", "reference_integer", "reference_tag_float",
    ]:  # fmt: skip
        assert get_schema(name).name == name


def test_unknown_schema_names_it_and_lists_known_ones():
    with pytest.raises(NotFoundError) as info:
        get_schema("synapses")
    msg = info.value.message
    assert "'synapses'" in msg and "synapse" in msg and "bound_tag" in msg
    assert info.value.details["known"] == schema_names()


def test_module_docstring_examples_run():
    result = doctest.testmod(schemas_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0


def test_declared_types_are_frozen_and_hashable():
    f = SYN.field("size")
    assert f == Field("size", "float", False, "size of synapse")
    with pytest.raises(AttributeError):
        f.name = "x"  # type: ignore[misc]
    assert len({*SYN.fields, *get_schema("nocenter_synapse").fields}) == 4
    assert hash(SYN) == hash(get_schema("synapse"))


def test_field_lookup_error_lists_fields():
    err = _input_error(SYN.field, "nope")
    assert "'nope'" in err.message and "pre_pt, post_pt, ctr_pt, size" in err.message


# --------------------------------------------------------------------------- documents
@pytest.mark.parametrize("name", sorted(REAL_DOCS))
def test_jsonschema_equals_the_real_document(name):
    real, ours = REAL_DOCS[name], get_schema(name).jsonschema()
    # the pieces caveclient reads, spelled out for a readable failure ...
    cls = get_schema(name).class_name
    assert ours["$ref"] == real["$ref"] == f"#/definitions/{cls}"
    assert ours["$schema"] == real["$schema"]
    assert sorted(ours["definitions"]) == sorted(real["definitions"])
    main, real_main = ours["definitions"][cls], real["definitions"][cls]
    assert list(main["properties"]) == list(real_main["properties"])  # sorted names, incl. valid
    assert main.get("required") == real_main.get("required")
    for prop, spec in real_main["properties"].items():
        for key in ("$ref", "type", "format", "enum"):
            assert main["properties"][prop].get(key) == spec.get(key), (prop, key)
    # ... and then the whole document, byte for byte once serialized with sorted keys
    assert json.dumps(ours, sort_keys=True) == json.dumps(real, sort_keys=True)


def test_jsonschema_is_a_fresh_copy():
    doc = SYN.jsonschema()
    doc["definitions"]["BoundSpatialPoint"]["properties"].clear()
    doc["definitions"]["SynapseSchema"]["properties"]["valid"]["type"].append("x")
    assert SYN.jsonschema() == REAL_DOCS["synapse"]


def test_all_jsonschemas_covers_the_registry():
    docs = all_jsonschemas()
    assert list(docs) == schema_names()
    for name, doc in docs.items():
        s = get_schema(name)
        defs = doc["definitions"]
        assert doc["$ref"] == f"#/definitions/{s.class_name}"
        assert ("BoundSpatialPoint" in defs) == bool(s.bound_points)
        assert ("SpatialPoint" in defs) == (len(s.spatial_points) > len(s.bound_points))
        jsonschema.Draft7Validator.check_schema(doc)


# --------------------------------------------------------------------------- columns
@pytest.mark.parametrize("name", schema_names())
def test_columns_follow_caves_flattening(name):
    s = get_schema(name)
    cols = s.columns()
    assert [c.name for c in cols] == REAL_FLAT[name]
    for c in cols:
        derived = c.name.endswith(("_supervoxel_id", "_root_id")) and c.field in s.bound_points
        assert c.derived == derived
        assert (c.dtype == "uint64") == derived
        is_point = c.name == f"{c.field}_position" and c.field in s.spatial_points
        assert (c.dtype == "point") == is_point


def test_synapse_shape():
    assert SYN.class_name == "SynapseSchema"
    assert SYN.bound_points == ("pre_pt", "post_pt")
    assert SYN.spatial_points == ("pre_pt", "post_pt", "ctr_pt")
    assert not SYN.is_reference
    assert SYN.post_load_rule == "distinct_roots"
    assert SYN.columns() == (
        Column("pre_pt_position", "point", "pre_pt", False),
        Column("pre_pt_supervoxel_id", "uint64", "pre_pt", True),
        Column("pre_pt_root_id", "uint64", "pre_pt", True),
        Column("post_pt_position", "point", "post_pt", False),
        Column("post_pt_supervoxel_id", "uint64", "post_pt", True),
        Column("post_pt_root_id", "uint64", "post_pt", True),
        Column("ctr_pt_position", "point", "ctr_pt", False),
        Column("size", "float64", "size", False),
    )


def test_reference_user_and_choice_flags():
    ref = get_schema("cell_type_reference_user")
    assert ref.is_reference and ref.field("target_id").kind == "target_id"
    assert ref.field("target_id").required
    assert ref.field("user_id").kind == "user_id"
    assert ref.post_load_rule == "cell_type_allowlist"
    assert get_schema("cell_type_local").post_load_rule == "cell_type_allowlist"
    assert get_schema("bound_tag").post_load_rule is None
    assert get_schema("proofread_status").field("status").choices == ("non", "clean", "extended")
    assert get_schema("cell_type_local").field("cell_type").choices is None  # a rule, not a check
    refs = {n for n in schema_names() if get_schema(n).is_reference}
    assert {"simple_reference", "reference_tag", "reference_integer", "reference_tag_float"} <= refs
    assert refs == {n for n, d in all_jsonschemas().items()
                    if "target_id" in d["definitions"][d["$ref"].split("/")[-1]]["properties"]}  # fmt: skip


# ------------------------------------------------------------------ caveclient's parsers
@pytest.mark.parametrize("name", schema_names())
def test_caveclient_get_col_info_derives_our_columns(name):
    s = get_schema(name)
    # the undecorated function: no TTL cache, no client needed when a definition is given
    pts, cols, numeric, unbound = get_col_info.__wrapped__(
        name, None, schema_definition=s.jsonschema()
    )
    assert sorted(pts) == sorted(s.bound_points)
    assert sorted(unbound) == sorted(p for p in s.spatial_points if p not in s.bound_points)
    derived = {f"{p}_{suffix}" for p in pts for suffix in ("position", "supervoxel_id", "root_id")}
    derived |= {f"{p}_position" for p in unbound}
    derived |= set(cols) - {"id"}
    derived |= set(numeric)
    # caveclient skips optional strings/booleans (their JSON type is a list, e.g. ["string", "null"])
    skipped = {f.name for f in s.fields if not f.required and f.kind in ("string", "boolean")}
    assert derived == {c.name for c in s.columns()} - skipped
    assert set(numeric) == {
        f.name for f in s.fields if f.kind in ("float", "integer", "target_id", "user_id")
    }


def test_caveclient_get_col_info_synapse_columns():
    pts, cols, numeric, unbound = get_col_info.__wrapped__(
        "synapse", None, schema_definition=SYN.jsonschema()
    )
    names = [f"{p}_{s}" for p in pts for s in ("position", "supervoxel_id", "root_id")]
    names += [f"{p}_position" for p in unbound] + [c for c in cols if c != "id"] + numeric
    assert sorted(names) == sorted(
        ["pre_pt_position", "pre_pt_supervoxel_id", "pre_pt_root_id", "ctr_pt_position",
         "post_pt_position", "post_pt_supervoxel_id", "post_pt_root_id", "size"]
    )  # fmt: skip


def test_caveclient_table_manager_builds_query_filters():
    meta = [
        {"table_name": "schemas_test_syn", "schema_type": "synapse", "description": "synapses"},
        {"table_name": "schemas_test_ct", "schema_type": "cell_type_reference",
         "reference_table": "schemas_test_syn", "description": "types"},
        {"table_name": "schemas_test_nuc", "schema_type": "nucleus_detection", "description": "n"},
        {"table_name": "schemas_test_ps", "schema_type": "proofread_status", "description": "p"},
    ]  # fmt: skip
    tables = TableManager(None, metadata=meta, schema=all_jsonschemas())
    assert tables.table_names == sorted(m["table_name"] for m in meta)
    syn = tables.schemas_test_syn
    assert set(syn.fields) == {
        "id", "pre_pt_root_id", "post_pt_root_id", "size",
        "pre_pt_position_bbox", "post_pt_position_bbox", "ctr_pt_position_bbox",
    }  # fmt: skip
    assert syn.numeric_fields == ["size"]
    q = syn(pre_pt_root_id=[7], post_pt_root_id=8)
    assert q.filter_kwargs_mat == {
        "filter_equal_dict": {"post_pt_root_id": 8},
        "filter_in_dict": {"pre_pt_root_id": [7]},
    }
    ct = tables.schemas_test_ct  # a reference table joins its target's columns
    assert {"target_id", "cell_type", "classification_system", "pre_pt_root_id"} <= set(ct.fields)
    ps = tables.schemas_test_ps
    assert {"pt_root_id", "valid_id", "status", "pt_position_bbox"} <= set(ps.fields)
    assert "bb_start_position_bbox" in tables.schemas_test_nuc.fields


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("synapse", [dict(pre_pt_position=[1, 2, 3], post_pt_position=[4, 5, 6],
                          ctr_pt_position=[2, 3, 4], size=5.5),
                     dict(pre_pt_position=[1, 2, 3], post_pt_position=[4, 5, 6],
                          ctr_pt_position=[2, 3, 4])]),
        ("bound_tag_user", [dict(pt_position=[1, 2, 3], tag="a", user_id=1)]),
        ("proofread_status", [dict(pt_position=[1, 2, 3], valid_id=864691135, status="clean")]),
        ("reference_tag_float", [dict(target_id=3, tag="x", value=0.5)]),
        ("nucleus_detection", [dict(pt_position=[1, 2, 3], volume=2.0, bb_start_position=[0, 0, 0],
                                    bb_end_position=[9, 9, 9])]),
    ],
)  # fmt: skip
def test_caveclient_staging_round_trip(name, rows):
    """Stage with caveclient (which validates against our document), then convert both ways."""
    s = get_schema(name)
    stage = StagedAnnotations(s.jsonschema(), table_name="t")
    for row in rows:
        stage.add(**row)
    from_records = s.records_to_columns(stage.annotation_list, user="alice")
    frame = stage.annotation_dataframe()
    from_frame = s.frame_to_columns(frame, user="alice")
    assert from_records.keys() == from_frame.keys()
    for key in from_records:
        a, b = from_records[key], from_frame[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        if a.dtype == object:
            assert a.tolist() == b.tolist()
        else:
            np.testing.assert_array_equal(a, b)
    expected = {c.name for c in s.columns() if not c.derived}
    assert set(from_records) == expected


def test_caveclient_staging_rejects_what_the_schema_rejects():
    stage = StagedAnnotations(get_schema("proofread_status").jsonschema())
    with pytest.raises(jsonschema.ValidationError):
        stage.add(pt_position=[1, 2, 3], valid_id=5, status="dirty")
    with pytest.raises(jsonschema.ValidationError):
        stage.add(pt_position=[1, 2, 3], valid_id="5", status="clean")


# --------------------------------------------------------------------- records: good data
def test_records_to_columns_types_and_shapes():
    recs = [
        _syn_record(id=3, valid=False, created="x", deleted=None, superceded_id=None),
        _syn_record(
            pre_pt={"position": np.array([1.5, 2, 3]), "supervoxel_id": 11, "root_id": 12},
            post_pt={"position": (4, 5, 6)},
            size=None,
        ),
    ]
    out = SYN.records_to_columns(recs)
    assert list(out) == ["pre_pt_position", "post_pt_position", "ctr_pt_position", "size"]
    assert out["pre_pt_position"].dtype == np.float64
    assert out["pre_pt_position"].shape == (2, 3)
    np.testing.assert_array_equal(out["pre_pt_position"], [[1, 2, 3], [1.5, 2, 3]])
    assert out["size"][0] == 10 and np.isnan(out["size"][1])


def test_records_to_columns_kinds_and_user():
    s = get_schema("proofreading_boolstatus_user")
    out = s.records_to_columns(
        [
            {"pt": {"position": [1, 2, 3]}, "valid_id": 2**62, "proofread": True, "user_id": 9},
            {"pt": {"position": [1, 2, 3]}, "valid_id": 5.0, "proofread": np.bool_(False)},
        ],
        user="alice",
    )
    assert out["valid_id"].dtype == np.int64 and out["valid_id"].tolist() == [2**62, 5]
    assert out["proofread"].dtype == np.bool_ and out["proofread"].tolist() == [True, False]
    assert out["user_id"].dtype == object and out["user_id"].tolist() == ["alice", "alice"]

    ref = get_schema("reference_tag").records_to_columns([{"target_id": 4, "tag": "x"}])
    assert ref["target_id"].dtype == np.int64 and ref["tag"].dtype == object


def test_records_to_columns_optional_values():
    s = get_schema("fly_cell_type_ext")
    out = s.records_to_columns(
        [
            {"pt": {"position": [1, 2, 3]}, "cell_type": "a", "hemisphere": "L",
             "synonym": float("nan"), "driver_line": None},
            {"pt": {"position": [1, 2, 3]}, "cell_type": "b", "hemisphere": "U", "synonym": "s"},
        ]
    )  # fmt: skip
    assert out["synonym"].tolist() == [None, "s"]
    assert out["driver_line"].tolist() == [None, None]
    nuc = get_schema("nucleus_detection").records_to_columns(
        [{"pt": {"position": [1, 2, 3]}, "bb_start": None, "bb_end": {"position": None}}]
    )
    assert np.isnan(nuc["bb_start_position"]).all() and np.isnan(nuc["bb_end_position"]).all()
    assert np.isnan(nuc["volume"]).all()
    pc = get_schema("postsynaptic_compartment").records_to_columns(
        [{"target_id": 1, "compartment": "soma", "on_spine": None}]
    )
    assert pc["on_spine"].dtype == np.bool_ and pc["dendrite_class"].tolist() == [None]


def test_records_accept_flat_positions_and_ignore_derived_keys():
    s = get_schema("bound_tag")
    out = s.records_to_columns(
        [{"pt_position": [1, 2, 3], "pt_supervoxel_id": 5, "pt_root_id": 6, "tag": "x"}]
    )
    np.testing.assert_array_equal(out["pt_position"], [[1, 2, 3]])


def test_records_partial_update():
    s = get_schema("bound_tag_user")
    out = s.records_to_columns([{"tag": "a"}, {"tag": "b"}], user="u", require_all=False)
    assert set(out) == {"tag", "user_id"}
    err = _input_error(
        s.records_to_columns, [{"tag": "a"}, {"pt": {"position": [1, 2, 3]}}], require_all=False
    )
    assert "row 0: field 'pt' is missing" in err.message
    assert "row 1: field 'tag' is missing" in err.message
    err = _input_error(s.records_to_columns, [{"tag": "a"}])
    assert "row 0: field 'pt' is missing (required)" in err.message


# ---------------------------------------------------------------------- records: bad data
@pytest.mark.parametrize(
    ("name", "records", "expected"),
    [
        ("synapse", [_syn_record(), _syn_record(foo=1)],
         ["row 1: unknown field 'foo'", "pre_pt, post_pt, ctr_pt, size"]),
        ("synapse", [_syn_record(), _syn_record(), {"pre_pt": {"position": [1, 2, 3]}}],
         ["row 2: field 'post_pt' is missing (required)", "row 2: field 'ctr_pt'"]),
        ("synapse", [_syn_record(size="3")], ["row 0: field 'size' needs a number", "'3'"]),
        ("synapse", [_syn_record(size=True)], ["row 0: field 'size' needs a number, got True"]),
        ("synapse", [_syn_record(size=float("inf"))], ["row 0: field 'size' needs a finite number"]),
        ("synapse", [_syn_record(pre_pt={"position": [1, 2]})],
         ["row 0: field 'pre_pt' needs {\"position\": [x, y, z]} with 3 finite numbers"]),
        ("synapse", [_syn_record(pre_pt={"position": [1, 2, float("nan")]})],
         ["row 0: field 'pre_pt' needs {\"position\": [x, y, z]}"]),
        ("synapse", [_syn_record(pre_pt={"position": [1, 2, "3"]})], ["row 0: field 'pre_pt'"]),
        ("synapse", [_syn_record(pre_pt=[1, 2, 3])], ["row 0: field 'pre_pt' needs"]),
        ("synapse", [_syn_record(ctr_pt={"position": [1, 2, 3], "x": 1})],
         ["row 0: field 'ctr_pt'", "unknown key(s) 'x'"]),
        ("synapse", [_syn_record(pre_pt=None)], ["row 0: field 'pre_pt' is required, got null"]),
        ("bound_tag", [{"pt": {"position": [1, 2, 3]}, "tag": 5}],
         ["row 0: field 'tag' needs a string, got 5"]),
        ("bound_tag", [{"pt": {"position": [1, 2, 3]}, "tag": None}],
         ["row 0: field 'tag' is required, got null"]),
        ("bound_tag_bool", [{"pt": {"position": [1, 2, 3]}, "tag": 1}],
         ["row 0: field 'tag' needs true or false, got 1"]),
        ("proofread_status", [{"pt": {"position": [1, 2, 3]}, "valid_id": True, "status": "clean"}],
         ["row 0: field 'valid_id' needs an integer, got True"]),
        ("proofread_status", [{"pt": {"position": [1, 2, 3]}, "valid_id": 2.5, "status": "clean"}],
         ["row 0: field 'valid_id' needs an integer, got 2.5"]),
        ("proofread_status", [{"pt": {"position": [1, 2, 3]}, "valid_id": 1, "status": "dirty"}],
         ["row 0: field 'status' must be one of 'non', 'clean', 'extended', got 'dirty'"]),
        ("reference_integer", [{"target_id": 1, "value": 2**63}],
         ["row 0: field 'value' needs an integer within the int64 range"]),
        ("reference_tag", [{"target_id": -1, "tag": "x"}], ["row 0: field 'target_id'", "-1"]),
        ("reference_tag", [{"target_id": "7", "tag": "x"}], ["row 0: field 'target_id'", "'7'"]),
        ("bound_tag", [{"pt": {"position": [1, 2, 3]}, "tag": "x", "user_id": 3}],
         ["row 0: unknown field 'user_id'"]),
        ("bound_tag", [{"pt_position": [1, 2, 3], "pt": {"position": [1, 2, 3]}, "tag": "x"}],
         ["row 0: field 'pt' is given twice"]),
        ("bound_tag", ["not a dict"], ["row 0: an annotation must be an object"]),
    ],
)  # fmt: skip
def test_records_to_columns_errors_name_field_and_row(name, records, expected):
    err = _input_error(get_schema(name).records_to_columns, records)
    for text in expected:
        assert text in err.message
    first = err.details["problems"][0]
    assert err.details["row"] == first["row"] and err.details["field"] == first["field"]
    assert err.details["schema"] == name


def test_records_to_columns_caps_problem_list():
    recs = [_syn_record(size="x") for _ in range(12)]
    err = _input_error(SYN.records_to_columns, recs)
    assert err.details["problem_count"] == 12
    assert len(err.details["problems"]) == MAX_PROBLEMS
    assert "and 7 more problem(s)" in err.message
    assert err.message.count("needs a number") == MAX_PROBLEMS


def test_records_to_columns_rejects_a_single_object():
    err = _input_error(SYN.records_to_columns, _syn_record())
    assert "must be a list" in err.message


# ----------------------------------------------------------------------- frames: good data
def _points(n, seed=0):
    return np.random.default_rng(seed).random((n, 3)) * 1000


def _syn_frames(n):
    pre, post, ctr = _points(n, 1), _points(n, 2), _points(n, 3)
    size = np.arange(n, dtype=np.int64)
    nx3 = {"pre_pt_position": pre, "post_pt_position": post, "ctr_pt_position": ctr, "size": size}
    split = {
        f"{name}_position_{ax}": pts[:, k]
        for name, pts in (("pre_pt", pre), ("post_pt", post), ("ctr_pt", ctr))
        for k, ax in enumerate("xyz")
    }
    split["size"] = size
    return nx3, split


def test_frame_forms_give_identical_output():
    n = 50
    nx3, split = _syn_frames(n)
    pre = nx3["pre_pt_position"]
    forms = {
        "dict (n,3)": nx3,
        "split DataFrame": pd.DataFrame(split),
        "split dict": split,
        "DataFrame of lists": pd.DataFrame({k: list(v) if v.ndim == 2 else v for k, v in nx3.items()}),
        "python lists": {k: v.tolist() for k, v in nx3.items()},
        "arrow fixed-size lists": pa.table(
            {k: pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 3) if v.ndim == 2 else v
             for k, v in nx3.items()}
        ),
        "arrow lists": pa.table({k: pa.array(v.tolist()) for k, v in nx3.items()}),
        "arrow split": pa.table(split),
        "mixed": {"pre_pt_position": pre, **{k: v for k, v in split.items() if "pre_pt" not in k}},
    }  # fmt: skip
    outputs = {name: SYN.frame_to_columns(frame) for name, frame in forms.items()}
    reference = outputs["dict (n,3)"]
    assert list(reference) == ["pre_pt_position", "post_pt_position", "ctr_pt_position", "size"]
    assert reference["pre_pt_position"].shape == (n, 3)
    assert reference["size"].dtype == np.float64
    for name, out in outputs.items():
        assert out.keys() == reference.keys(), name
        for key in out:
            assert out[key].dtype == reference[key].dtype, (name, key)
            np.testing.assert_array_equal(out[key], reference[key], err_msg=f"{name}: {key}")


def test_frame_matches_records():
    s = get_schema("cell_match")
    records = [
        {"pt": {"position": [1, 2, 3]}, "query_root_id": 5, "match_id": "a", "score": 0.5,
         "validation": True},
        {"pt": {"position": [4, 5, 6]}, "query_root_id": 6, "match_id": "b", "score": 1},
    ]  # fmt: skip
    frame = pd.DataFrame(
        {"pt_position": [[1, 2, 3], [4, 5, 6]], "query_root_id": [5, 6], "match_id": ["a", "b"],
         "score": [0.5, 1.0], "validation": [True, False]}
    )  # fmt: skip
    a, b = s.records_to_columns(records), s.frame_to_columns(frame)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype
        assert a[key].tolist() == b[key].tolist()


def test_frame_kinds_missing_values_and_ignored_columns():
    s = get_schema("fly_cell_type_ext")
    out = s.frame_to_columns(
        pd.DataFrame(
            {"id": [1, 2], "valid": [True, True], "pt_root_id": [0, 0], "pt_supervoxel_id": [0, 0],
             "pt_position": [[1, 2, 3], [4, 5, 6]], "cell_type": ["a", "b"],
             "hemisphere": pd.Categorical(["L", "U"]), "synonym": ["x", np.nan]}
        )
    )  # fmt: skip
    assert out["cell_type"].dtype == object and out["cell_type"].tolist() == ["a", "b"]
    assert out["hemisphere"].tolist() == ["L", "U"]
    assert out["synonym"].tolist() == ["x", None]
    assert out["driver_line"].tolist() == [None, None]  # optional column left out

    ps = get_schema("proofreading_boolstatus_user").frame_to_columns(
        {"pt_position": np.zeros((2, 3)), "valid_id": np.array([1, 2], np.uint64),
         "proofread": np.array([True, False]), "user_id": [1, 2]},
        user="bob",
    )  # fmt: skip
    assert ps["valid_id"].dtype == np.int64 and ps["proofread"].dtype == np.bool_
    assert ps["user_id"].tolist() == ["bob", "bob"]

    nuc = get_schema("nucleus_detection").frame_to_columns(
        {"pt_position": np.zeros((2, 3)), "bb_start_position": [None, [1, 2, 3]],
         "bb_end_position_x": [np.nan, 1.0], "bb_end_position_y": [np.nan, 2.0],
         "bb_end_position_z": [np.nan, 3.0]}
    )  # fmt: skip
    assert np.isnan(nuc["bb_start_position"][0]).all()
    assert nuc["bb_end_position"][1].tolist() == [1, 2, 3]
    assert np.isnan(nuc["volume"]).all()

    ints = get_schema("contact").frame_to_columns(
        pd.DataFrame({"sidea_pt_position": [[1, 2, 3]] * 2, "sideb_pt_position": [[1, 2, 3]] * 2,
                      "size": [4.0, np.nan]})
    )  # fmt: skip
    assert ints["size"].dtype == np.int64 and ints["size"].tolist() == [4, 0]


def test_frame_to_columns_empty():
    out = SYN.frame_to_columns(
        pd.DataFrame({c: [] for c in ("pre_pt_position", "post_pt_position", "ctr_pt_position")})
    )
    assert out["pre_pt_position"].shape == (0, 3) and out["size"].shape == (0,)


def test_frame_to_columns_million_rows_is_fast():
    n = 1_000_000
    nx3, split = _syn_frames(n)
    frame = pd.DataFrame(split)
    SYN.frame_to_columns({k: v[:10] for k, v in nx3.items()})  # warm up imports
    for data in (nx3, split, frame):
        t0 = time.perf_counter()
        out = SYN.frame_to_columns(data)
        elapsed = time.perf_counter() - t0
        assert out["ctr_pt_position"].shape == (n, 3)
        assert elapsed < 1.0, f"{type(data).__name__}: {elapsed:.2f}s"


# ------------------------------------------------------------------------ frames: bad data
def _bad_frame(**changes):
    nx3, _ = _syn_frames(20)
    frame = {k: v.copy() for k, v in nx3.items()}
    for key, value in changes.items():
        if value is None:
            del frame[key]
        else:
            frame[key] = value
    return frame


def _with(array, row, value):
    array = np.array(array, dtype=object if isinstance(value, str) else None)
    array[row] = value
    return array


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (_bad_frame(size=_with(np.arange(20.0), 7, np.inf)),
         ["row 7: column 'size' needs a finite number"]),
        (_bad_frame(size=_with(np.arange(20.0), 3, "x")), ["row 3: column 'size' needs a number, got 'x'"]),
        (_bad_frame(size=np.array(["1"] * 20)), ["row 0: column 'size' needs a number, got '1'"]),
        (_bad_frame(size=np.ones(20, dtype=bool)), ["row 0: column 'size' needs a number, got True"]),
        (_bad_frame(pre_pt_position=_with(_points(20), (4, 1), np.nan)),
         ["row 4: column 'pre_pt_position' needs [x, y, z] with 3 finite numbers"]),
        (_bad_frame(pre_pt_position=_points(20)[:, :2]), ["column 'pre_pt_position'", "(20, 2)"]),
        (_bad_frame(pre_pt_position=[[1, 2, 3]] * 5 + [[1, 2]] + [[1, 2, 3]] * 14),
         ["row 5: column 'pre_pt_position' needs [x, y, z]"]),
        (_bad_frame(pre_pt_position=[[1, 2, 3]] * 2 + [[1, 2, "a"]] + [[1, 2, 3]] * 17),
         ["row 2: column 'pre_pt_position'"]),
        (_bad_frame(pre_pt_position=pd.Series([[1, 2, 3]] * 19 + [None])),
         ["row 19: column 'pre_pt_position' is required, got null"]),
        (_bad_frame(ctr_pt_position=None), ["missing required column ctr_pt_position"]),
        (_bad_frame(foo=np.zeros(20), bar=np.zeros(20)),
         ["unknown column(s) 'foo', 'bar'", "pre_pt_position, post_pt_position, ctr_pt_position, size"]),
        (_bad_frame(pre_pt_position=None, pre_pt_position_x=np.zeros(20), pre_pt_position_y=np.zeros(20)),
         ["point 'pre_pt' lacks column(s) pre_pt_position_z"]),
        (_bad_frame(pre_pt_position_x=np.zeros(20), pre_pt_position_y=np.zeros(20),
                    pre_pt_position_z=np.zeros(20)), ["'pre_pt' is given both"]),
        (_bad_frame(pre_pt_position=None, pre_pt_position_x=np.zeros(20),
                    pre_pt_position_y=_with(np.zeros(20), 9, np.nan), pre_pt_position_z=np.zeros(20)),
         ["row 9: columns pre_pt_position_x, pre_pt_position_y, pre_pt_position_z need 3 finite"]),
        (_bad_frame(pre_pt_position=None, pre_pt_position_x=np.zeros(20),
                    pre_pt_position_y=_with(np.zeros(20), 6, "a"), pre_pt_position_z=np.zeros(20)),
         ["row 6: column 'pre_pt_position_y' needs a number, got 'a'"]),
    ],
)  # fmt: skip
def test_frame_to_columns_errors_name_column_and_row(frame, expected):
    err = _input_error(SYN.frame_to_columns, frame)
    for text in expected:
        assert text in err.message, err.message


@pytest.mark.parametrize(
    ("name", "frame", "expected"),
    [
        ("proofread_status",
         {"pt_position": np.zeros((3, 3)), "valid_id": [1, 2, 3], "status": ["clean", "non", "dirty"]},
         ["row 2: column 'status' must be one of 'non', 'clean', 'extended', got 'dirty'"]),
        ("proofread_status",
         {"pt_position": np.zeros((3, 3)), "valid_id": [1.0, 2.5, 3.0], "status": ["clean"] * 3},
         ["row 1: column 'valid_id' needs an integer, got 2.5"]),
        ("proofread_status",
         pd.DataFrame({"pt_position": [[0, 0, 0]] * 3, "valid_id": pd.array([1, None, 3], "Int64"),
                       "status": ["clean"] * 3}),
         ["row 1: column 'valid_id' is required, got null"]),
        ("proofread_status",
         {"pt_position": np.zeros((2, 3)), "valid_id": np.array([1, 2**63], np.uint64),
          "status": ["clean"] * 2},
         ["row 1: column 'valid_id' needs an integer within the int64 range"]),
        ("proofread_status",
         {"pt_position": np.zeros((2, 3)), "valid_id": [True, False], "status": ["clean"] * 2},
         ["row 0: column 'valid_id' needs an integer, got True"]),
        ("bound_tag", {"pt_position": np.zeros((2, 3)), "tag": ["a", None]},
         ["row 1: column 'tag' is required, got null"]),
        ("bound_tag", {"pt_position": np.zeros((2, 3)), "tag": ["a", 3]},
         ["row 1: column 'tag' needs a string, got 3"]),
        ("bound_tag", {"pt_position": np.zeros((2, 3)), "tag": [1, 3]},
         ["row 0: column 'tag' needs a string"]),
        ("bound_tag_bool", {"pt_position": np.zeros((2, 3)), "tag": [1, 0]},
         ["row 0: column 'tag' needs true or false, got 1"]),
        ("reference_tag", {"target_id": [1, -2], "tag": ["a", "b"]}, ["row 1: column 'target_id'", "-2"]),
        ("reference_tag", {"target_id": [1, 2], "tag": ["a", "b"], "extra": [1, 2]},
         ["unknown column(s) 'extra'", "target_id"]),
        ("bound_tag", {"pt_position": np.zeros((2, 3)), "tag": ["a"]}, ["different lengths"]),
    ],
)  # fmt: skip
def test_frame_to_columns_kind_errors(name, frame, expected):
    err = _input_error(get_schema(name).frame_to_columns, frame)
    for text in expected:
        assert text in err.message, err.message


def test_frame_to_columns_error_details():
    err = _input_error(SYN.frame_to_columns, _bad_frame(size=_with(np.arange(20.0), 7, np.inf)))
    assert err.details["field"] == "size" and err.details["row"] == 7
    assert err.details["problems"][0]["row"] == 7


def test_frame_to_columns_rejects_non_tables():
    err = _input_error(SYN.frame_to_columns, [1, 2, 3])
    assert "DataFrame" in err.message
