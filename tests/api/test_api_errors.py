"""Bad input gets the right 4xx with a JSON ``message``; afterwards the server still answers and
no edit was half-applied (every root unchanged, no operation logged)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import requests
from cave_truth import Editor, GraphTruth, Ledger


@dataclass
class Ctx:
    sv: int  # a supervoxel of a multi-supervoxel cell
    sv2: int  # another supervoxel of the same cell
    other: int  # a supervoxel of another cell
    root: int
    bogus: int  # a layer-1 ID that is not in the graph
    stale: int  # a root superseded by an edit
    stale_sv: int  # a supervoxel of the stale root
    op: int  # the merge that made it stale
    p: dict[int, list[float]]  # supervoxel -> a point inside it (nm)


@pytest.fixture(scope="module")
def ctx(cg, editor: Editor, truth: GraphTruth, ledger: Ledger) -> Ctx:
    comps = sorted((c for c in ledger.components() if len(c) >= 3), key=len)
    a, b, c = comps[0], comps[1], comps[-1]
    # make a stale root of our own: merge a and b, the old root of a is then superseded
    stale = int(cg.get_root_id(min(a)))
    op, _ = editor.merge(min(a), min(b))
    sv, sv2 = sorted(c)[:2]
    svs = [min(a), sv, sv2, min(b)]
    return Ctx(
        sv=sv,
        sv2=sv2,
        other=min(b),
        root=int(cg.get_root_id(sv)),
        bogus=int(truth.sv_ids.max()) + 1,
        stale=stale,
        stale_sv=min(a),
        op=op,
        p={s: truth.nm(s) for s in svs},
    )


@pytest.fixture(scope="module")
def before(ctx: Ctx, cg, truth: GraphTruth, api) -> dict[str, Any]:
    return {"roots": cg.get_roots(truth.sv_ids), "n_operations": api.status()["n_operations"]}


def _pt(c: Ctx, sv: int, node: int | None = None) -> list[Any]:
    return [node if node is not None else sv, *c.p[sv]]


# name -> (method, path, request kwargs builder, expected status, words the message must contain)
CASES: dict[str, tuple[str, str, Any, int, tuple[str, ...]]] = {
    "non-integer id": ("get", "node/abc/root", lambda c: {}, 400, ("abc",)),
    "negative id": ("get", "node/-5/root", lambda c: {}, 400, ("-5",)),
    "id too large": ("get", f"node/{2**64}/root", lambda c: {}, 400, ("2**64",)),
    "unknown id": ("get", "node/{bogus}/root", lambda c: {}, 400, ("{bogus}",)),
    "unknown node": ("get", "node/{bogus_l2}/leaves", lambda c: {}, 400, ("{bogus_l2}",)),
    "supervoxel to leaves": ("get", "node/{sv}/leaves", lambda c: {}, 400, ("layer",)),
    "supervoxel to children": ("get", "node/{sv}/children", lambda c: {}, 400, ("layer",)),
    "supervoxel to lvl2_graph": ("get", "node/{sv}/lvl2_graph", lambda c: {}, 400, ("layer",)),
    "bad stop_layer": ("get", "node/{root}/leaves", lambda c: {"params": {"stop_layer": "99"}}, 400, ("stop_layer",)),
    "non-integer stop_layer": ("get", "node/{sv}/root", lambda c: {"params": {"stop_layer": "two"}}, 400, ("stop_layer",)),
    "malformed bounds": ("get", "node/{root}/leaves", lambda c: {"params": {"bounds": "1-2_3"}}, 400, ("bounds",)),
    "inverted bounds": ("get", "node/{root}/lvl2_graph", lambda c: {"params": {"bounds": "9-1_0-1_0-1"}}, 400, ("bounds",)),
    "malformed timestamp": ("get", "node/{sv}/root", lambda c: {"params": {"timestamp": "yesterday"}}, 400, ("timestamp",)),
    "timestamp before the graph": ("get", "node/{sv}/root", lambda c: {"params": {"timestamp": "1000.0"}}, 400, ("before",)),
    "malformed boolean": ("get", "root/{root}/change_log", lambda c: {"params": {"filtered": "maybe"}}, 400, ("filtered",)),
    "binary body not uint64": ("post", "roots_binary", lambda c: {"data": b"1234567"}, 400, ("uint64",)),
    "body not JSON": ("post", "is_latest_roots", lambda c: {"data": b"{not json"}, 400, ("JSON",)),
    "JSON body missing": ("get", "valid_nodes", lambda c: {}, 400, ("empty",)),
    "JSON key missing": ("post", "node/leaves_many", lambda c: {"json": {"ids": [c.root]}}, 400, ("node_ids",)),
    "non-integer id in body": ("post", "is_latest_roots", lambda c: {"json": {"node_ids": ["x1"]}}, 400, ("x1",)),
    "supervoxel is not a root": ("post", "is_latest_roots", lambda c: {"json": {"node_ids": [c.sv]}}, 400, ("root",)),
    "unknown root timestamps": ("post", "root_timestamps", lambda c: {"json": {"node_ids": [c.bogus]}}, 400, ("{bogus}",)),
    "operation_ids missing": ("get", "operation_details", lambda c: {}, 400, ("operation_ids",)),
    "unknown operation details": ("get", "operation_details", lambda c: {"params": {"operation_ids": "[999999]"}}, 404, ("999999",)),
    "delta_roots without timestamp_past": ("get", "delta_roots", lambda c: {}, 400, ("timestamp_past",)),
    "merge with one point": ("post", "merge", lambda c: {"json": [_pt(c, c.sv)]}, 400, ("two points",)),
    "merge body not a list": ("post", "merge", lambda c: {"json": {"a": 1}}, 400, ("merge",)),
    "merge point malformed": ("post", "merge", lambda c: {"json": [[c.sv, 1, 2], _pt(c, c.other)]}, 400, ("[id, x, y, z]",)),
    "merge coordinate not a number": ("post", "merge", lambda c: {"json": [[c.sv, "x", 0, 0], _pt(c, c.other)]}, 400, ("number",)),
    "merge outside the volume": ("post", "merge", lambda c: {"json": [[c.sv, 1e9, 0, 0], _pt(c, c.other)]}, 400, ("outside",)),
    "merge unknown supervoxel": ("post", "merge", lambda c: {"json": [[c.bogus, *c.p[c.sv]], _pt(c, c.other)]}, 400, ("{bogus}",)),
    "merge a cell with itself": ("post", "merge", lambda c: {"json": [_pt(c, c.sv), _pt(c, c.sv2)]}, 400, ("itself",)),
    "merge a supervoxel with itself": ("post", "merge", lambda c: {"json": [_pt(c, c.sv), _pt(c, c.sv)]}, 400, ("itself",)),
    "merge a stale root": ("post", "merge", lambda c: {"json": [_pt(c, c.stale_sv, c.stale), _pt(c, c.sv)]}, 409, ("{stale}",)),
    "split without sinks": ("post", "split", lambda c: {"json": {"sources": [_pt(c, c.sv)]}}, 400, ("sinks",)),
    "split with empty sinks": ("post", "split", lambda c: {"json": {"sources": [_pt(c, c.sv)], "sinks": []}}, 400, ("sink",)),
    "split identical sources and sinks": ("post", "split", lambda c: {"json": {"sources": [_pt(c, c.sv)], "sinks": [_pt(c, c.sv)]}}, 400, ("share",)),
    "split across two cells": ("post", "split", lambda c: {"json": {"sources": [_pt(c, c.sv)], "sinks": [_pt(c, c.other)]}}, 400, ("different cells",)),
    "split a stale root": ("post", "split", lambda c: {"json": {"sources": [_pt(c, c.stale_sv, c.stale)], "sinks": [_pt(c, c.other, c.stale)]}}, 409, ("superseded",)),
    "preview identical sources and sinks": ("post", "graph/split_preview", lambda c: {"json": {"sources": [_pt(c, c.sv)], "sinks": [_pt(c, c.sv)]}}, 400, ("share",)),
    "undo unknown operation": ("post", "undo", lambda c: {"json": {"operation_id": 999999}}, 404, ("999999",)),
    "redo unknown operation": ("post", "redo", lambda c: {"json": {"operation_id": 999999}}, 404, ("999999",)),
    "undo body not JSON": ("post", "undo", lambda c: {"data": b"nope"}, 400, ("JSON",)),
    "undo without operation_id": ("post", "undo", lambda c: {"json": {}}, 400, ("operation_id",)),
    "unknown table": ("get", "/segmentation/api/v1/table/nope/node/1/root", lambda c: {}, 404, ("nope",)),
    "unknown table info": ("get", "/segmentation/table/nope/info", lambda c: {}, 404, ("nope",)),
    "unknown datastack": ("get", "/info/api/v2/datastack/full/nope", lambda c: {}, 404, ("nope",)),
}


def _fill(text: str, c: Ctx) -> str:
    bogus_l2 = (2 << 56) | 12345
    return text.format(bogus=c.bogus, bogus_l2=bogus_l2, sv=c.sv, root=c.root, stale=c.stale)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_4xx_with_a_message(case, ctx: Ctx, before, api, cg, truth: GraphTruth):
    method, path, kwargs, status, words = CASES[case]
    n_ops, roots = api.status()["n_operations"], cg.get_roots(truth.sv_ids)
    r = getattr(api, method)(_fill(path, ctx), **kwargs(ctx))
    # nothing was (half-)applied by this request, and the server still answers
    assert api.status()["n_operations"] == n_ops
    assert np.array_equal(cg.get_roots(truth.sv_ids), roots)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    message = r.json()["message"]
    for w in words:
        assert _fill(w, ctx) in message, message


def test_caveclient_surfaces_errors(cg, ctx: Ctx, truth: GraphTruth, before):
    with pytest.raises(requests.HTTPError) as e:
        cg.do_merge([ctx.sv, ctx.sv2], [truth.voxel(ctx.sv), truth.voxel(ctx.sv2)], resolution=tuple(truth.resolution))
    assert e.value.response.status_code == 400
    with pytest.raises(requests.HTTPError) as e:
        cg.undo_operation(999999)
    assert e.value.response.status_code == 404
    with pytest.raises(requests.HTTPError) as e:
        cg.get_leaves(ctx.sv)
    assert e.value.response.status_code == 400


def test_redo_of_an_operation_that_is_in_effect_is_refused(api, ctx: Ctx, before):
    r = api.post("redo", json={"operation_id": ctx.op})
    assert r.status_code in (400, 409) and r.json()["message"]


def test_nothing_was_half_applied(ctx: Ctx, before, cg, truth: GraphTruth, api):
    # the whole batch, against the snapshot taken before it (each case also checks itself)
    st = api.status()
    assert st["ready"]
    assert st["n_operations"] == before["n_operations"]
    assert np.array_equal(cg.get_roots(truth.sv_ids), before["roots"])
