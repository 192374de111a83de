"""Annotation tables and materialization through the unmodified caveclient against a real server.

Truth is independent of the server: each annotation's supervoxel is read straight from the
dataset's ``segmentation.zarr``; which rows are alive at a time comes from the creation/deletion
times the test itself recorded (from the annotation records); each supervoxel's cell at a time
comes from the networkx :class:`Ledger` of every edit the tests made. A query result must equal
the brute-force answer: rows alive at T, their points' supervoxels grouped by the connected
components at T, then the filter.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import zarr
from cave_truth import iso_ms, ms
from conftest import ROW_LIMIT, client_for, own_server_fixtures, token_of

SYN = "synapses"
TYPES = "cell_types"
TAGS = "syn_tags"  # a reference table on synapses
LAB = "lab_marks"  # owned by alice, write GROUP


# this module's own server and graph (its edits must not disturb the other modules' stories)
dataset_dir, server, truth, ledger, client, api, editor = own_server_fixtures("annotations_api")


# ----------------------------------------------------------------------------- model
@dataclass
class Row:
    id: int
    svs: dict[str, int]  # bound point -> supervoxel (from the zarr volume)
    fields: dict[str, Any]
    created: int  # ms, from the annotation record
    deleted: int | None = None

    def alive(self, t: int) -> bool:
        return self.created <= t and (self.deleted is None or t < self.deleted)


@dataclass
class Model:
    rows: dict[str, dict[int, Row]] = field(default_factory=dict)

    def add(self, table: str, row: Row) -> None:
        self.rows.setdefault(table, {})[row.id] = row

    def alive(self, table: str, t: int) -> list[Row]:
        return [r for r in self.rows.get(table, {}).values() if r.alive(t)]


@pytest.fixture(scope="module")
def volume(dataset_dir) -> np.ndarray:
    return np.asarray(zarr.open_array(str(dataset_dir / "segmentation.zarr"), mode="r")[:])


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


@pytest.fixture(scope="module")
def model() -> Model:
    return Model()


def now_ms() -> int:
    return ms(dt.datetime.now(dt.timezone.utc))


def fg_points(volume: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    fg = np.argwhere(volume > 0)
    return fg[rng.choice(len(fg), n, replace=False)]


def record_rows(client, model: Model, table: str, ids: list[int], volume: np.ndarray, points: dict) -> None:
    """Put freshly posted rows in the model, with creation times from the server's records."""
    recs = client.annotation.get_annotation(table, ids)
    by_id = {int(r["id"]): r for r in recs}
    for k, i in enumerate(ids):
        rec = by_id[i]
        svs = {pt: int(volume[tuple(np.asarray(p[k], dtype=int))]) for pt, p in points.items()}
        model.add(table, Row(i, svs, {}, iso_ms(rec["created"] + "+00:00")))


def components_at(ledger, t: int):
    return ledger.at(t)


def check_against_truth(df: pd.DataFrame, rows: list[Row], ledger, t: int, pts: tuple[str, ...]) -> None:
    """Same IDs; each root column groups rows exactly like the components at t."""
    assert sorted(df["id"].tolist()) == sorted(r.id for r in rows)
    g = ledger.at(t)
    by_id = {r.id: r for r in rows}
    for pt in pts:
        col = f"{pt}_root_id"
        root_of_comp: dict[frozenset, int] = {}
        for i, root in zip(df["id"].tolist(), df[col].tolist()):
            sv = by_id[i].svs[pt]
            if sv == 0:
                assert root == 0
                continue
            import networkx as nx

            comp = frozenset(nx.node_connected_component(g, sv))
            if comp in root_of_comp:
                assert root_of_comp[comp] == root, f"{col}: one cell, two roots"
            else:
                assert root not in root_of_comp.values(), f"{col}: two cells, one root"
                root_of_comp[comp] = root
        sv_col = f"{pt}_supervoxel_id"
        if sv_col in df.columns:
            assert [by_id[i].svs[pt] for i in df["id"]] == df[sv_col].tolist()


def brute(model: Model, table: str, t: int, ledger, pt: str, sv0: int) -> list[Row]:
    """Rows alive at t whose point ``pt`` lies in the cell of ``sv0`` at t."""
    comp = ledger.component_of(sv0, t)
    return [r for r in model.alive(table, t) if r.svs[pt] in comp]


def create_version(server, name: str, token: str | None = None) -> dict:
    r = requests.post(
        f"{server.cave}/api/materialize/{name}/version",
        json={},
        headers={"Authorization": f"Bearer {token or server.token}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tables(client, server, truth) -> dict:
    """Tables of several schemas, created through caveclient."""
    res = [float(x) for x in truth.resolution]
    client.annotation.create_table(SYN, "synapse", "synapses for the tests", voxel_resolution=res)
    client.annotation.create_table(TYPES, "cell_type_local", "cell types", voxel_resolution=[res[0] / 2, res[1] / 2, res[2]])
    client.annotation.create_table("nuclei", "nucleus_detection", "nuclei", voxel_resolution=res)
    client.annotation.create_table(TAGS, "reference_tag", "tags of synapses", voxel_resolution=res, reference_table=SYN)
    return {"resolution": res}


@pytest.fixture(scope="module")
def synapses(client, tables, model, volume, rng, truth) -> list[int]:
    """60 synapses posted as records + 40 as a DataFrame."""
    pre = fg_points(volume, rng, 100)
    post = fg_points(volume, rng, 100)
    recs = [
        {"pre_pt": {"position": a.tolist()}, "post_pt": {"position": b.tolist()}, "ctr_pt": {"position": a.tolist()}, "size": int(k)}
        for k, (a, b) in enumerate(zip(pre[:60], post[:60]))
    ]
    ids = [int(i) for i in client.annotation.post_annotation(SYN, recs)]
    assert len(ids) == 60
    df = pd.DataFrame(
        {
            "pre_pt_position": list(pre[60:]),
            "post_pt_position": list(post[60:]),
            "ctr_pt_position": list(pre[60:]),
            "size": np.arange(60, 100),
        }
    )
    ids2 = [int(i) for i in client.annotation.post_annotation_df(SYN, df, position_columns=["pre_pt_position", "post_pt_position", "ctr_pt_position"])]
    assert len(ids2) == 40
    ids += ids2
    record_rows(client, model, SYN, ids, volume, {"pre_pt": pre, "post_pt": post})
    for k, i in enumerate(ids):
        model.rows[SYN][i].fields["size"] = k
    return ids


@pytest.fixture(scope="module")
def cell_types(client, tables, model, volume, rng) -> list[int]:
    pts = fg_points(volume, rng, 30)
    kinds = ["pyramidal", "basket", "chandelier", "martinotti", "pyr_deep"]
    recs = [
        {"pt": {"position": (p * [2, 2, 1]).tolist()}, "cell_type": kinds[k % 5], "classification_system": "classical"}
        for k, p in enumerate(pts)
    ]
    ids = [int(i) for i in client.annotation.post_annotation(TYPES, recs)]
    record_rows(client, model, TYPES, ids, volume, {"pt": pts})
    for k, i in enumerate(ids):
        model.rows[TYPES][i].fields.update(cell_type=kinds[k % 5], pos=(pts[k] * [2, 2, 1]).tolist())
    return ids


# ---------------------------------------------------------------------------- schemas
def test_schema_service(client) -> None:
    names = client.schema.get_schemas()
    for s in ("synapse", "cell_type_local", "bound_tag", "bound_double_tag", "nucleus_detection", "bound_tag_user", "proofread_status"):
        assert s in names
    syn = client.schema.schema_definition("synapse")
    props = syn["definitions"]["SynapseSchema"]["properties"]
    assert props["pre_pt"]["$ref"] == "#/definitions/BoundSpatialPoint"
    multi = client.schema.schema_definition_multi(["synapse", "bound_tag"])
    assert set(multi) == {"synapse", "bound_tag"}
    assert set(client.schema.schema_definition_all()) == set(names)


def test_tables_are_listed_with_metadata(client, tables) -> None:
    names = client.annotation.get_tables()
    assert {SYN, TYPES, "nuclei", TAGS} <= set(names)
    md = client.annotation.get_table_metadata(SYN)
    assert md["schema_type"] == "synapse" and md["read_permission"] == "PUBLIC" and md["write_permission"] == "PRIVATE"
    assert list(md["voxel_resolution"]) == tables["resolution"]
    assert client.annotation.get_table_metadata(TAGS)["reference_table"] == SYN
    client.annotation.update_metadata(TYPES, description="cell types v2")
    assert client.annotation.get_table_metadata(TYPES)["description"] == "cell types v2"


# ------------------------------------------------------------------------ live queries
def test_live_query_matches_brute_force(client, synapses, model, ledger) -> None:
    t = now_ms()
    time.sleep(0.01)
    for row in list(model.rows[SYN].values())[:6]:
        sv0 = row.svs["pre_pt"]
        root = int(client.chunkedgraph.get_root_id(sv0, timestamp=dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc)))
        df = client.materialize.live_live_query(
            SYN, dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc),
            filter_equal_dict={SYN: {"pre_pt_root_id": root}}, split_positions=True,
        )
        check_against_truth(df, brute(model, SYN, t, ledger, "pre_pt", sv0), ledger, t, ("pre_pt", "post_pt"))
        assert set(df["pre_pt_root_id"]) == {root}


def test_every_filter_kind(client, synapses, cell_types, model, ledger, volume) -> None:
    t = now_ms()
    when = dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc)
    alive = model.alive(SYN, t)

    def q(**kw):
        return client.materialize.live_live_query(SYN, when, split_positions=True, **kw)

    sizes = {r.id: r.fields["size"] for r in alive}
    df = q(filter_in_dict={SYN: {"size": [1, 2, 3, 77]}})
    assert sorted(df.id) == sorted(i for i, s in sizes.items() if s in (1, 2, 3, 77))
    df = q(filter_out_dict={SYN: {"size": list(range(10, 100))}})
    assert sorted(df.id) == sorted(i for i, s in sizes.items() if s < 10)
    df = q(filter_greater_dict={SYN: {"size": 90}})
    assert sorted(df.id) == sorted(i for i, s in sizes.items() if s > 90)
    df = q(filter_less_dict={SYN: {"size": 5}})
    assert sorted(df.id) == sorted(i for i, s in sizes.items() if s < 5)
    df = q(filter_greater_equal_dict={SYN: {"size": 95}})
    assert sorted(df.id) == sorted(i for i, s in sizes.items() if s >= 95)
    df = q(filter_less_equal_dict={SYN: {"size": 4}})
    assert sorted(df.id) == sorted(i for i, s in sizes.items() if s <= 4)
    # in on a root column: rows of two cells
    a, b = alive[0].svs["post_pt"], alive[1].svs["post_pt"]
    roots = [int(x) for x in client.chunkedgraph.get_roots([a, b], timestamp=when)]
    df = q(filter_in_dict={SYN: {"post_pt_root_id": roots}})
    comp = ledger.component_of(a, t) | ledger.component_of(b, t)
    assert sorted(df.id) == sorted(r.id for r in alive if r.svs["post_pt"] in comp)
    # not-in on a root column
    df = q(filter_out_dict={SYN: {"post_pt_root_id": roots}})
    assert sorted(df.id) == sorted(r.id for r in alive if r.svs["post_pt"] not in comp)
    # spatial box (table voxels, inclusive)
    box = [[10, 10, 2], [60, 70, 15]]
    df = q(filter_spatial_dict={SYN: {"pre_pt_position": box}})
    pos = {r.id: volume_pos for r, volume_pos in zip(alive, [None] * len(alive))}
    del pos
    full = q()
    inside = full[
        (full.pre_pt_position_x.between(10, 60)) & (full.pre_pt_position_y.between(10, 70)) & (full.pre_pt_position_z.between(2, 15))
    ]
    assert sorted(df.id) == sorted(inside.id) and 0 < len(df) < len(full)
    # regex on a string column (cell types)
    tdf = client.materialize.live_live_query(TYPES, when, filter_regex_dict={TYPES: {"cell_type": "^pyr"}})
    want = [r.id for r in model.alive(TYPES, t) if re.search("^pyr", r.fields["cell_type"])]
    assert sorted(tdf.id) == sorted(want) and len(want) > 0
    # equal on a string
    tdf = client.materialize.live_live_query(TYPES, when, filter_equal_dict={TYPES: {"cell_type": "basket"}})
    assert sorted(tdf.id) == sorted(r.id for r in model.alive(TYPES, t) if r.fields["cell_type"] == "basket")
    # select columns, desired resolution (cell types are stored at half the x/y voxel size)
    tdf = client.materialize.live_live_query(
        TYPES, when, select_columns={TYPES: ["id", "pt_position", "cell_type"]}, desired_resolution=[8, 8, 40], split_positions=True
    )
    assert list(tdf.columns) == ["id", "pt_position_x", "pt_position_y", "pt_position_z", "cell_type"]
    stored = {r.id: r.fields["pos"] for r in model.alive(TYPES, t)}
    for i, x, y, z in zip(tdf.id, tdf.pt_position_x, tdf.pt_position_y, tdf.pt_position_z):
        assert [x * 2, y * 2, z] == stored[i]


def test_limit_offset_are_deterministic_and_the_row_limit_refuses(client, synapses, api, truth) -> None:
    when = dt.datetime.now(dt.timezone.utc)
    full = client.materialize.live_live_query(SYN, when)
    assert list(full.id) == sorted(full.id)
    page1 = client.materialize.live_live_query(SYN, when, limit=30)
    page2 = client.materialize.live_live_query(SYN, when, limit=30, offset=30)
    assert list(page1.id) + list(page2.id) == list(full.id[:60])
    r = api.post(
        f"/materialize/api/v3/datastack/{truth.name}/query",
        params={"return_pyarrow": "True", "arrow_format": "True"},
        json={"table": SYN, "timestamp": when.isoformat(), "limit": ROW_LIMIT + 1},
    )
    assert r.status_code == 400 and "row limit" in r.json()["message"]


def test_edit_is_visible_to_the_next_query(client, synapses, model, ledger, editor, truth) -> None:
    rows = model.alive(SYN, now_ms())
    # merge the pre cells of two synapses whose cells differ
    a = rows[0].svs["pre_pt"]
    b = next(r.svs["pre_pt"] for r in rows[1:] if r.svs["pre_pt"] not in ledger.component_of(a) and r.svs["pre_pt"])
    op, new_roots = editor.merge(a, b)
    root = new_roots[0]
    df = client.materialize.live_live_query(
        SYN, dt.datetime.now(dt.timezone.utc), filter_equal_dict={SYN: {"pre_pt_root_id": root}}
    )
    t = now_ms()
    check_against_truth(df, brute(model, SYN, t, ledger, "pre_pt", a), ledger, t, ("pre_pt", "post_pt"))
    assert any(r.svs["pre_pt"] == b for r in brute(model, SYN, t, ledger, "pre_pt", a))


def test_update_and_delete_keep_history(client, synapses, model, ledger) -> None:
    t_before = now_ms()
    time.sleep(0.01)
    victim, changed = synapses[3], synapses[4]
    old = client.annotation.get_annotation(SYN, [changed])[0]
    new_map = client.annotation.update_annotation(
        SYN, [{"id": changed, "pre_pt": old["pre_pt"] | {}, "post_pt": old["post_pt"], "ctr_pt": old["ctr_pt"], "size": 1234}]
    )
    new_id = int(new_map[str(changed)] if str(changed) in new_map else new_map[changed])
    client.annotation.delete_annotation(SYN, [victim])
    recs = {int(r["id"]): r for r in client.annotation.get_annotation(SYN, [victim, changed, new_id])}
    assert recs[changed]["superceded_id"] == new_id and recs[changed]["deleted"] is not None
    assert recs[victim]["deleted"] is not None and recs[new_id]["size"] == 1234
    m = model.rows[SYN]
    m[victim].deleted = iso_ms(recs[victim]["deleted"] + "+00:00")
    m[changed].deleted = iso_ms(recs[changed]["deleted"] + "+00:00")
    m[new_id] = Row(new_id, dict(m[changed].svs), {"size": 1234}, iso_ms(recs[new_id]["created"] + "+00:00"))
    # now: the deleted rows are gone, the new one is there; before: the old rows are back
    t_after = now_ms()
    for t in (t_before, t_after):
        when = dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc)
        df = client.materialize.live_live_query(SYN, when)
        assert sorted(df.id) == sorted(r.id for r in model.alive(SYN, t))
    assert int(client.annotation.get_annotation_count(SYN)) == len(model.alive(SYN, now_ms()))


# ------------------------------------------------------------------- versions + joins
@pytest.fixture(scope="module")
def version(server, truth, synapses, cell_types) -> dict:
    v = create_version(server, truth.name)
    assert v["bytes"] > 0
    return v


def test_versions_listed_and_queried(server, truth, version, model, ledger) -> None:
    c = client_for(server, truth.name)
    vs = c.materialize.get_versions()
    assert version["version"] in vs and 1 in vs
    md = c.materialize.get_version_metadata(version["version"])
    t = ms(md["time_stamp"])
    assert SYN in c.materialize.get_tables(version=version["version"])
    assert int(c.materialize.get_annotation_count(SYN, version=version["version"])) == len(model.alive(SYN, t))
    for row in model.alive(SYN, t)[:5]:
        sv0 = row.svs["post_pt"]
        root = int(c.chunkedgraph.get_root_id(sv0, timestamp=md["time_stamp"]))
        df = c.materialize.query_table(SYN, filter_equal_dict={"post_pt_root_id": root}, materialization_version=version["version"])
        assert len(df) > 0
        check_against_truth(df, brute(model, SYN, t, ledger, "post_pt", sv0), ledger, t, ("pre_pt", "post_pt"))
    # version 1 is the dataset as ingested: the table did not exist then, so it has no rows
    assert c.materialize.query_table(SYN, materialization_version=1).empty


def test_query_between_versions_and_after_edits(server, truth, version, model, ledger, editor) -> None:
    """caveclient's composite (query_table(timestamp=T)) and the live query, after a split/merge."""
    c = client_for(server, truth.name)
    rows = model.alive(SYN, now_ms())
    a = rows[5].svs["pre_pt"]
    b = next(r.svs["pre_pt"] for r in rows[6:] if r.svs["pre_pt"] and r.svs["pre_pt"] not in ledger.component_of(a))
    editor.merge(a, b)
    time.sleep(0.01)
    t = now_ms()
    when = dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc)
    root = int(c.chunkedgraph.get_root_id(a, timestamp=when))
    live = c.materialize.live_live_query(SYN, when, filter_equal_dict={SYN: {"pre_pt_root_id": root}})
    check_against_truth(live, brute(model, SYN, t, ledger, "pre_pt", a), ledger, t, ("pre_pt", "post_pt"))
    # the client-side composite answers from the version (no annotation changed since), roots at T
    comp = c.materialize.query_table(SYN, filter_equal_dict={"pre_pt_root_id": root}, timestamp=when)
    assert sorted(comp.id) == sorted(live.id)
    assert set(comp.pre_pt_root_id) == {root}
    # before the version (and before these edits), the live query sees the older state exactly
    t_old = ms(c.materialize.get_version_metadata(version["version"])["time_stamp"]) - 1
    old = c.materialize.live_live_query(SYN, dt.datetime.fromtimestamp(t_old / 1000, dt.timezone.utc))
    assert sorted(old.id) == sorted(r.id for r in model.alive(SYN, t_old))


def test_join_and_reference_tables(client, server, truth, synapses, cell_types, model, ledger) -> None:
    tag_ids = [int(i) for i in client.annotation.post_annotation(TAGS, [{"target_id": synapses[k], "tag": f"t{k}"} for k in (0, 1, 2)])]
    assert len(tag_ids) == 3
    v = create_version(server, truth.name)["version"]
    c = client_for(server, truth.name)
    ref = c.materialize.query_table(TAGS, materialization_version=v)
    assert sorted(ref.target_id) == sorted(synapses[k] for k in (0, 1, 2))
    assert "size" in ref.columns  # the target's columns came along
    t = ms(c.materialize.get_version_metadata(v)["time_stamp"])
    joined = c.materialize.join_query(
        [[SYN, "post_pt_root_id"], [TYPES, "pt_root_id"]], materialization_version=v, suffixes={SYN: "", TYPES: "_type"},
        filter_in_dict={SYN: {"size": list(range(25))}},
    )
    import networkx as nx

    g = ledger.at(t)
    expected = set()
    for s in model.alive(SYN, t):
        if s.fields["size"] >= 25:
            continue
        for ct in model.alive(TYPES, t):
            if s.svs["post_pt"] and ct.svs["pt"] and nx.has_path(g, s.svs["post_pt"], ct.svs["pt"]):
                expected.add((s.id, ct.id))
    got = set(zip(joined["id"].tolist(), joined["id_type"].tolist()))
    assert got == expected


def test_tables_interface_and_synapse_query(server, truth, synapses, version, model, ledger) -> None:
    c = client_for(server, truth.name)
    row = model.alive(SYN, now_ms())[0]
    root = int(c.chunkedgraph.get_root_id(row.svs["pre_pt"]))
    df = c.materialize.tables.synapses(pre_pt_root_id=root).query(timestamp=dt.datetime.now(dt.timezone.utc))
    t = now_ms()
    check_against_truth(df, brute(model, SYN, t, ledger, "pre_pt", row.svs["pre_pt"]), ledger, t, ("pre_pt", "post_pt"))
    sq = c.materialize.synapse_query(pre_ids=root, timestamp=dt.datetime.now(dt.timezone.utc))
    # synapse_query drops autapses (pre root == post root) by default
    assert sorted(sq.id) == sorted(df[df.pre_pt_root_id != df.post_pt_root_id].id)


# ---------------------------------------------------------------------- bulk + perms
def test_bulk_parquet_insert(client, server, truth, tables, volume, rng) -> None:
    n = 20_000
    pts = fg_points(volume, rng, n)
    df = pd.DataFrame({"pt_position_x": pts[:, 0], "pt_position_y": pts[:, 1], "pt_position_z": pts[:, 2], "volume": rng.random(n)})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df), buf)
    before = int(client.annotation.get_annotation_count("nuclei"))
    r = requests.post(
        f"{server.cave}/api/annotation/{truth.name}/table/nuclei/bulk",
        data=buf.getvalue(), headers={"Authorization": f"Bearer {server.token}"}, timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["n"] == n
    assert int(client.annotation.get_annotation_count("nuclei")) == before + n
    got = client.materialize.live_live_query(
        "nuclei", dt.datetime.now(dt.timezone.utc), filter_in_dict={"nuclei": {"id": [r.json()["first_id"] + 7]}}
    )
    assert int(got.pt_supervoxel_id.iloc[0]) == int(volume[tuple(pts[7])])


def test_permissions_per_user_and_group(server, truth, synapses) -> None:
    bob = client_for(server, truth.name, token_of("bob"))
    alice = client_for(server, truth.name, token_of("alice"))
    carol = client_for(server, truth.name, token_of("carol"))
    # owner's table: PUBLIC read, PRIVATE write
    assert int(bob.annotation.get_annotation_count(SYN)) > 0
    with pytest.raises(requests.HTTPError, match="403|may not write"):
        bob.annotation.post_annotation(SYN, [{"pre_pt": {"position": [1, 1, 1]}, "post_pt": {"position": [2, 2, 2]}, "ctr_pt": {"position": [1, 1, 1]}, "size": 1}])
    # alice's table: GROUP write, PRIVATE read
    alice.annotation.create_table(LAB, "bound_tag", "alice's marks", voxel_resolution=[float(x) for x in truth.resolution], write_permission="GROUP", read_permission="GROUP")
    pos = [48, 48, 12]
    ids = carol.annotation.post_annotation(LAB, [{"pt": {"position": pos}, "tag": "by carol"}])
    assert len(ids) == 1
    with pytest.raises(requests.HTTPError, match="403|may not"):
        bob.annotation.post_annotation(LAB, [{"pt": {"position": pos}, "tag": "by bob"}])
    with pytest.raises(requests.HTTPError, match="403|may not read"):
        bob.materialize.live_live_query(LAB, dt.datetime.now(dt.timezone.utc))
    with pytest.raises(requests.HTTPError, match="403|owner"):
        carol.annotation.delete_table(LAB)
    assert int(alice.annotation.get_annotation_count(LAB)) == 1


# ------------------------------------------------------------------------- bad input
BAD_POSTS = [
    ("missing field", {"pre_pt": {"position": [1, 1, 1]}, "ctr_pt": {"position": [1, 1, 1]}, "size": 1}, "post_pt"),
    ("mistyped field", {"pre_pt": {"position": [1, 1, 1]}, "post_pt": {"position": [1, 2, 1]}, "ctr_pt": {"position": [1, 1, 1]}, "size": "big"}, "size"),
    ("unknown field", {"pre_pt": {"position": [1, 1, 1]}, "post_pt": {"position": [1, 2, 1]}, "ctr_pt": {"position": [1, 1, 1]}, "size": 1, "colour": "red"}, "colour"),
    ("outside the volume", {"pre_pt": {"position": [1, 1, 1]}, "post_pt": {"position": [1, 2, 10_000]}, "ctr_pt": {"position": [1, 1, 1]}, "size": 1}, "outside"),
    ("bad position", {"pre_pt": {"position": [1, 1]}, "post_pt": {"position": [1, 2, 1]}, "ctr_pt": {"position": [1, 1, 1]}, "size": 1}, "pre_pt"),
]


@pytest.mark.parametrize("what,bad,needle", BAD_POSTS, ids=[b[0] for b in BAD_POSTS])
def test_bad_annotations_are_refused_and_nothing_is_inserted(api, truth, synapses, what, bad, needle) -> None:
    A = f"/annotation/api/v2/aligned_volume/{truth.name}/table/{SYN}"
    before = api.get(f"{A}/count").json()
    good = {"pre_pt": {"position": [5, 5, 5]}, "post_pt": {"position": [6, 6, 6]}, "ctr_pt": {"position": [5, 5, 5]}, "size": 1}
    r = api.post(f"{A}/annotations", json={"annotations": [good, bad]})
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]
    assert api.get(f"{A}/count").json() == before
    assert api.get("/api/status").json()["ready"]


def test_bad_tables_and_filters(api, truth, synapses) -> None:
    A = f"/annotation/api/v2/aligned_volume/{truth.name}"
    M3 = f"/materialize/api/v3/datastack/{truth.name}"
    res = {"voxel_resolution_x": 8.0, "voxel_resolution_y": 8.0, "voxel_resolution_z": 40.0}
    cases = [
        (api.post(f"{A}/table", json={"schema_type": "synapse", "table_name": "Bad-Name; DROP TABLE x", "metadata": {"description": "d", **res}}), 400, "invalid table name"),
        (api.post(f"{A}/table", json={"schema_type": "no_such_schema", "table_name": "ok_name", "metadata": {"description": "d", **res}}), 404, "no_such_schema"),
        (api.get(f"{A}/table/no_such_table"), 404, "no_such_table"),
        (api.post(f"{A}/table/{TAGS}/annotations", json={"annotations": [{"target_id": 10**9, "tag": "x"}]}), 400, "target_id"),
        (api.post(f"{M3}/query", json={"table": SYN, "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "filter_equal_dict": {SYN: {"no_col; DROP": 1}}}), 400, "no column"),
        (api.post(f"{M3}/query", json={"table": SYN, "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "filter_in_dict": {SYN: {"size": 3}}}), 400, "list"),
        (api.post(f"{M3}/query", json={"table": SYN, "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "filter_spatial_dict": {SYN: {"pre_pt_position": [[5, 5, 5], [1, 1, 1]]}}}), 400, "min"),
        (api.post(f"{M3}/query", json={"table": SYN, "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "filter_regex_dict": {SYN: {"size": "("}}}), 400, "string column"),
        (api.post(f"{M3}/query", json={"table": SYN, "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "filter_equal_dict": {"other": {"size": 1}}}), 400, "not in this query"),
        (api.post(f"{M3}/query", json={"table": "no_such_table", "timestamp": dt.datetime.now(dt.timezone.utc).isoformat()}), 404, "no_such_table"),
        (api.post(f"{M3}/version/999/table/{SYN}/query", json={}), 404, "version 999"),
    ]
    for r, status, needle in cases:
        assert r.status_code == status, (needle, r.status_code, r.text)
        assert needle in r.json()["message"], (needle, r.text)
    assert SYN in api.get(f"{A}/table").json()


def test_stale_root_filter_is_refused_on_live_query(client, api, truth, synapses, ledger, editor, model) -> None:
    rows = model.alive(SYN, now_ms())
    a = rows[10].svs["post_pt"]
    old_root = int(client.chunkedgraph.get_root_id(a))
    b = next(r.svs["post_pt"] for r in rows[11:] if r.svs["post_pt"] and r.svs["post_pt"] not in ledger.component_of(a))
    editor.merge(a, b)
    with pytest.raises(requests.HTTPError, match="not current"):
        client.materialize.live_live_query(SYN, dt.datetime.now(dt.timezone.utc), filter_equal_dict={SYN: {"post_pt_root_id": old_root}})
    df = client.materialize.live_live_query(
        SYN, dt.datetime.now(dt.timezone.utc), filter_equal_dict={SYN: {"post_pt_root_id": old_root}}, allow_invalid_root_ids=True
    )
    assert df.empty


def test_kernel_helpers_bulk_insert_and_version(server, truth, tables, volume, rng) -> None:
    """The notebook path: ``cavelab.kernel_ext`` bulk insert (batched Parquet) and a version."""
    from cavelab.kernel_ext import bulk_insert, connect, create_version

    c = connect(server.cave, server.token)
    pts = fg_points(volume, rng, 2_500)
    before = int(c.annotation.get_annotation_count("nuclei"))
    df = pd.DataFrame({"pt_position": list(pts), "volume": np.arange(2_500, dtype=float)})
    ids = bulk_insert(c, "nuclei", df, batch_rows=1_000, progress=False)
    assert len(ids) == 2_500 and len(np.unique(ids)) == 2_500
    assert int(c.annotation.get_annotation_count("nuclei")) == before + 2_500
    v = create_version(c, keep_forever=True)
    assert v["expires_on"] is None
    got = client_for(server, truth.name).materialize.query_table(
        "nuclei", filter_in_dict={"id": [int(ids[0]), int(ids[-1])]}, materialization_version=v["version"]
    )
    assert sorted(got.volume) == [0.0, 2499.0]
    assert sorted(got.pt_supervoxel_id) == sorted(int(volume[tuple(p)]) for p in (pts[0], pts[-1]))


def test_staging_views_and_table_listing(client, server, truth, tables, volume, rng) -> None:
    """caveclient's staging helper, views (none) and the tables/metadata listing."""
    stage = client.annotation.stage_annotations("nuclei")
    pts = fg_points(volume, rng, 3)
    for k, p in enumerate(pts):
        stage.add(pt_position=p.tolist(), volume=float(k))
    before = int(client.annotation.get_annotation_count("nuclei"))
    client.annotation.upload_staged_annotations(stage)
    assert int(client.annotation.get_annotation_count("nuclei")) == before + 3
    c = client_for(server, truth.name)
    names = {m["table_name"] for m in c.materialize.get_tables_metadata()}
    assert {SYN, TYPES, "nuclei", TAGS} <= names
    assert c.materialize.get_views() == {}
    assert "synapses" in dir(c.materialize.tables)


def test_json_answers_and_notice_warnings(client, api, truth, synapses, version) -> None:
    """``return_df=False`` gets JSON records; a table's notice text travels as a Warning header."""
    client.annotation.update_metadata(TYPES, notice_text="types are provisional")
    M3 = f"/materialize/api/v3/datastack/{truth.name}"
    v = version["version"]
    r = api.post(
        f"{M3}/version/{v}/table/{TYPES}/query",
        params={"return_pyarrow": "False", "arrow_format": "False", "split_positions": "True"},
        json={"limit": 3},
    )
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert "provisional" in r.headers["Warning"]
    rows = r.json()
    assert len(rows) <= 3 and all({"id", "pt_root_id", "pt_position_x", "cell_type"} <= set(x) for x in rows)
    got = client_for(api.server, truth.name).materialize.query_table(SYN, return_df=False, limit=5, materialization_version=v)
    assert [x["id"] for x in got] == sorted(x["id"] for x in got) and len(got) == 5
