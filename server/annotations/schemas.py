"""Annotation schemas: CAVE's EMAnnotationSchemas registry, reproduced without marshmallow.

CAVE describes every annotation table by a *schema type* from the ``emannotationschemas``
package (marshmallow classes). That package pins old marshmallow/numpy/SQLAlchemy, so cavelab
declares the same schemas here as plain data: the same names, field names, field types,
required flags and choice sets, and it renders the same JSON-schema documents that CAVE's
schema service serves (``JSONSchema().dump(get_schema(name)())`` from marshmallow-jsonschema
0.10), which is what ``caveclient`` parses (``client.materialize.tables``,
``client.annotation.stage_annotations``).

Conventions (as in CAVE):

* every schema also has ``valid`` (a boolean the server sets; never a client field) and the CRUD
  columns ``id``/``created``/``deleted``/``superceded_id``; none of them are :class:`Field`\\ s;
* a point field is written ``{"position": [x, y, z]}``; a *bound* point is also linked to the
  segmentation, so it flattens to ``<f>_position``, ``<f>_supervoxel_id`` and ``<f>_root_id``
  (the last two are filled by the server, never by the client); an unbound point flattens to
  ``<f>_position`` only;
* a reference schema has ``target_id``, the ``id`` of a row of another table;
* ``user_id`` (CAVE's ``AutoUserIdField``) is always filled by the server with the caller.

Rules CAVE applies in marshmallow ``post_load`` hooks (e.g. a synapse whose pre and post roots
are equal is not valid) are *not* applied here: they need root IDs, so they belong to whoever
computes roots. Each schema names its rule in :attr:`Schema.post_load_rule` (see
:data:`POST_LOAD_RULES`); the allow-lists the cell-type rules use are
:data:`CELL_TYPE_ALLOWLISTS` and :data:`EXTENDED_CLASSICAL_CELL_TYPES`.

The ``derived_spatial_point``/``derived_tag``/``derived_numeric_value`` schemas are left out: their
point type (``DerivedSpatialPoint``, with ``dependent_chunk`` and ``level``) is not a plain
spatial point.

>>> get_schema("synapse").bound_points
('pre_pt', 'post_pt')
>>> [c.name for c in get_schema("bound_tag").columns()]
['pt_position', 'pt_supervoxel_id', 'pt_root_id', 'tag']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

import numpy as np

from cavelab.server.errors import InputError, NotFoundError

__all__ = [
    "CELL_TYPE_ALLOWLISTS",
    "EXTENDED_CLASSICAL_CELL_TYPES",
    "IGNORED_KEYS",
    "POST_LOAD_RULES",
    "Column",
    "ColumnDtype",
    "Field",
    "FieldKind",
    "PostLoadRule",
    "Schema",
    "all_jsonschemas",
    "get_schema",
    "schema_names",
]

FieldKind = Literal[
    "bound_point", "spatial_point", "string", "float", "integer", "boolean", "target_id", "user_id"
]
ColumnDtype = Literal["point", "uint64", "float64", "int64", "bool", "string"]
PostLoadRule = Literal["distinct_roots", "cell_type_allowlist", "category_allowlist"]

POST_LOAD_RULES: dict[str, str] = {
    "distinct_roots": "valid is false when the first two bound points have the same root ID "
    "(synapse-like and contact schemas; decided when roots are known, i.e. at materialization)",
    "cell_type_allowlist": "valid is false when classification_system is a key of "
    "CELL_TYPE_ALLOWLISTS and cell_type is not in its list (other systems are always valid)",
    "category_allowlist": "valid is false when cell_type is not in EXTENDED_CLASSICAL_CELL_TYPES",
}
"""What each :attr:`Schema.post_load_rule` means. cavelab stores rows as given; apply these later."""

CELL_TYPE_ALLOWLISTS: dict[str, tuple[str, ...]] = {
    "valence": ("e", "i", "g", "uncertain"),
    "ivscc_m": tuple(
        [f"spiny_{i}" for i in range(1, 15)]
        + [f"aspiny_s_{i}" for i in range(1, 17)]
        + [f"aspiny_d_{i}" for i in range(1, 6)]
        + ["uncertain"]
    ),
    "classical": (
        "chandelier", "pyramidal", "martinotti", "pv", "sst", "vip", "clutch", "ivy", "basket",
        "neurogliaform", "astrocyte", "microglia-perivascular", "microglia-perineuronal",
        "uncertain",
    ),
    "allen_cortex_excitatory": (
        "L2/3 PC", "L4 PC", "L5 IT", "L5 NP", "L5 PT", "L6 Tall", "L6 Middle", "L6 Inverted",
        "L6 Other", "Unsure",
    ),
    "allen_cortex_inhibitory": (
        "CCK Large Basket", "Martinotti", "Basket (regular)", "Inhibitory Targeting", "SST",
        "PV Basket", "Neurgliaform", "Chandelier Cell", "VIP", "Unsure",
    ),
}  # fmt: skip
"""Cell types CAVE accepts as valid per ``classification_system`` (``cell_type_local`` & co)."""

EXTENDED_CLASSICAL_CELL_TYPES: tuple[str, ...] = (
    "basket", "chandelier", "oligodendrocyte", "vip-i", "martinotti", "neurogliaform", "vip-chat",
    "vip-apical", "ivy", "clutch", "sst", "pyramidal", "uncertain",
)  # fmt: skip
"""Cell types CAVE accepts as valid for ``extended_classical_cell_type``."""

IGNORED_KEYS: frozenset[str] = frozenset({"id", "valid", "created", "deleted", "superceded_id"})
"""Record keys / frame columns that are accepted and ignored (the server owns them)."""

MAX_PROBLEMS = 5
"""At most this many problems are spelled out in one :class:`InputError`."""

_POINT_KINDS = frozenset({"bound_point", "spatial_point"})
_POINT_KEYS = frozenset({"position", "supervoxel_id", "root_id"})
_JSON_NUMBERS = (int, float)  # exact types: bool is not one of them
_PLAIN_TYPES = (int, str, bool, dict, list, tuple)
_AXES = ("x", "y", "z")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_POINT_NEEDS = 'needs {"position": [x, y, z]} with 3 finite numbers'
_XYZ_NEEDS = "needs [x, y, z] with 3 finite numbers"


# --------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class Field:
    """One field of a schema, as a client writes it.

    ``required`` is the flag of the real schema (it is what the JSON document says);
    ``user_id`` fields are nevertheless never needed from the client, the server fills them.
    ``json_extra`` holds the few extra keys the real JSON document carries for this field
    (``order``, ``index``, ``default``, ...); a ``None`` value removes a generated key.

    >>> get_schema("proofread_status").field("status").choices
    ('non', 'clean', 'extended')
    """

    name: str
    kind: FieldKind
    required: bool
    description: str = ""
    choices: tuple[str, ...] | tuple[int, ...] | None = None
    json_extra: Mapping[str, Any] | None = dataclass_field(default=None, compare=False, repr=False)

    @property
    def is_point(self) -> bool:
        return self.kind in _POINT_KINDS

    def jsonschema(self) -> dict[str, Any]:
        """This field's entry in ``definitions.<Class>.properties`` (marshmallow-jsonschema)."""
        if self.is_point:
            ref = "BoundSpatialPoint" if self.kind == "bound_point" else "SpatialPoint"
            out: dict[str, Any] = {"type": "object", "$ref": f"#/definitions/{ref}"}
            if self.description:
                out["description"] = self.description
        elif self.kind == "target_id":  # CAVE's ReferenceTableField maps to a bare integer
            out = {"type": "integer"}
        else:
            json_type = _JSON_TYPE[self.kind]
            out = {"title": self.name, "type": json_type if self.required else [json_type, "null"]}
            if self.kind in _JSON_FORMAT:
                out["format"] = _JSON_FORMAT[self.kind]
            if self.description:
                out["description"] = self.description
            if self.choices is not None:
                out["enum"] = list(self.choices)
                out["enumNames"] = []
        for key, value in (self.json_extra or {}).items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out


_JSON_TYPE = {
    "string": "string",
    "float": "number",
    "integer": "number",
    "user_id": "number",
    "boolean": "boolean",
}
_JSON_FORMAT = {"float": "float", "integer": "integer", "user_id": "integer"}
_DTYPE: dict[str, ColumnDtype] = {
    "string": "string",
    "float": "float64",
    "integer": "int64",
    "boolean": "bool",
    "target_id": "int64",
    "user_id": "string",
}


@dataclass(frozen=True)
class Column:
    """One flat (materialized) column of a schema.

    >>> get_schema("bound_tag").columns()[1]
    Column(name='pt_supervoxel_id', dtype='uint64', field='pt', derived=True)
    """

    name: str
    dtype: ColumnDtype
    field: str
    derived: bool


_VALID_PROPERTY: dict[str, Any] = {
    "default": False,
    "description": "is this annotation valid",
    "title": "valid",
    "type": ["boolean", "null"],
}
_SPATIAL_POINT_DEF: dict[str, Any] = {
    "additionalProperties": False,
    "properties": {"position": {"type": "array"}},
    "required": ["position"],
    "type": "object",
}
_BOUND_SPATIAL_POINT_DEF: dict[str, Any] = {
    "additionalProperties": False,
    "properties": {
        "position": {"type": "array"},
        "root_id": {"type": "integer"},
        "supervoxel_id": {"type": "integer"},
    },
    "required": ["position"],
    "type": "object",
}


@dataclass(frozen=True)
class Schema:
    """An annotation schema type (e.g. ``synapse``) and the conversions of client data.

    >>> s = get_schema("synapse")
    >>> s.class_name, s.is_reference, s.spatial_points
    ('SynapseSchema', False, ('pre_pt', 'post_pt', 'ctr_pt'))
    >>> s.jsonschema()["$ref"]
    '#/definitions/SynapseSchema'
    """

    name: str
    class_name: str
    fields: tuple[Field, ...]
    description: str
    post_load_rule: PostLoadRule | None = None
    """CAVE's ``post_load`` validity rule, not applied here (see :data:`POST_LOAD_RULES`)."""

    # ---------------------------------------------------------------- shape
    @property
    def is_reference(self) -> bool:
        """True when rows point at rows of another table (``target_id``)."""
        return any(f.kind == "target_id" for f in self.fields)

    @property
    def bound_points(self) -> tuple[str, ...]:
        """Point fields linked to the segmentation, in field order."""
        return tuple(f.name for f in self.fields if f.kind == "bound_point")

    @property
    def spatial_points(self) -> tuple[str, ...]:
        """All point fields, bound or not, in field order."""
        return tuple(f.name for f in self.fields if f.is_point)

    def field(self, name: str) -> Field:
        """The field called ``name`` (:class:`InputError` naming the schema's fields if none)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise InputError(
            f"schema {self.name!r} has no field {name!r}; its fields are "
            f"{', '.join(f.name for f in self.fields)}",
            schema=self.name,
            field=name,
        )

    def columns(self) -> tuple[Column, ...]:
        """Flat columns in CAVE's flattening order (the schema's declared field order).

        A bound point gives ``position``, ``supervoxel_id``, ``root_id``; an unbound one only
        ``position``. ``id``/``valid``/CRUD columns are not included.

        >>> [c.name for c in get_schema("nucleus_detection").columns()]
        ['volume', 'pt_position', 'pt_supervoxel_id', 'pt_root_id', 'bb_start_position', 'bb_end_position']
        """
        out: list[Column] = []
        for f in self.fields:
            if f.is_point:
                out.append(Column(f"{f.name}_position", "point", f.name, False))
                if f.kind == "bound_point":
                    out.append(Column(f"{f.name}_supervoxel_id", "uint64", f.name, True))
                    out.append(Column(f"{f.name}_root_id", "uint64", f.name, True))
            else:
                out.append(Column(f.name, _DTYPE[f.kind], f.name, False))
        return tuple(out)

    def jsonschema(self) -> dict[str, Any]:
        """The JSON-schema document CAVE's schema service serves for this type (a fresh copy).

        >>> doc = get_schema("bound_tag").jsonschema()
        >>> sorted(doc["definitions"]), doc["definitions"]["BoundTagAnnotation"]["required"]
        (['BoundSpatialPoint', 'BoundTagAnnotation'], ['pt', 'tag'])
        """
        props = {f.name: f.jsonschema() for f in self.fields}
        props["valid"] = dict(_VALID_PROPERTY, type=list(_VALID_PROPERTY["type"]))
        main: dict[str, Any] = {
            "additionalProperties": True,
            "properties": dict(sorted(props.items())),
            "type": "object",
        }
        required = sorted(f.name for f in self.fields if f.required)
        if required:
            main["required"] = required
        definitions: dict[str, Any] = {}
        kinds = {f.kind for f in self.fields}
        if "bound_point" in kinds:
            definitions["BoundSpatialPoint"] = _copy_json(_BOUND_SPATIAL_POINT_DEF)
        if "spatial_point" in kinds:
            definitions["SpatialPoint"] = _copy_json(_SPATIAL_POINT_DEF)
        definitions[self.class_name] = main
        return {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": definitions,
            "$ref": f"#/definitions/{self.class_name}",
        }

    # ------------------------------------------------------------ conversions
    def records_to_columns(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        user: str | None = None,
        require_all: bool = True,
    ) -> dict[str, np.ndarray]:
        """Validate annotations as caveclient posts them and return flat, non-derived columns.

        A record looks like ``{"pt": {"position": [x, y, z]}, "tag": "a"}`` (a flat
        ``"pt_position": [x, y, z]`` is accepted too). ``supervoxel_id``/``root_id`` inside a
        point, flat ``<pt>_supervoxel_id``/``<pt>_root_id`` keys and :data:`IGNORED_KEYS` are
        ignored; ``user_id`` is always ``user``, whatever the record says.

        Output: ``"<f>_position"`` ``(n, 3)`` float64, floats float64, integers and
        ``target_id`` int64, booleans bool, strings and ``user_id`` object arrays. A missing
        (``None``/NaN) value of an optional field becomes NaN for floats and points, ``None``
        for strings, and 0 / False for integers / booleans (cavelab's int64 and bool columns
        hold no nulls).

        With ``require_all=False`` (partial updates) a field missing from every record is left
        out of the output; a field given in some records must then be given in all of them
        unless it is optional.

        Every problem raises :class:`InputError` naming the row and the field (up to
        :data:`MAX_PROBLEMS` problems per message; ``details`` has ``row``, ``field`` and
        ``problems``).

        >>> cols = get_schema("bound_tag").records_to_columns([{"pt": {"position": [1, 2, 3]}, "tag": "a"}])
        >>> cols["pt_position"].tolist(), cols["tag"].tolist()
        ([[1.0, 2.0, 3.0]], ['a'])
        >>> get_schema("bound_tag").records_to_columns([{"pt": {"position": [1, 2]}, "tag": "a"}])
        Traceback (most recent call last):
        ...
        cavelab.server.errors.InputError: invalid 'bound_tag' annotations: row 0: field 'pt' needs {"position": [x, y, z]} with 3 finite numbers, got {'position': [1, 2]}
        """
        if isinstance(records, (Mapping, str, bytes)) or not isinstance(records, Sequence):
            raise InputError(
                f"annotations for schema {self.name!r} must be a list of objects, "
                f"got {_show(records)}",
                schema=self.name,
            )
        n = len(records)
        problems = _Problems(self.name)
        by_name = {f.name: f for f in self.fields}
        flat_positions = {f"{p}_position": p for p in self.spatial_points}
        ignored = IGNORED_KEYS | self._derived_names()
        given: dict[str, list[Any]] = {
            f.name: [_ABSENT] * n for f in self.fields if f.kind != "user_id"
        }
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                problems.add(i, None, f"row {i}: an annotation must be an object, got {_show(rec)}")
                continue
            seen: dict[str, str] = {}
            for key, value in rec.items():
                if key in ignored:
                    continue
                f = by_name.get(key)
                flat = False
                if f is None and key in flat_positions:
                    f, flat = by_name[flat_positions[key]], True
                if f is None:
                    problems.add(i, key, f"row {i}: unknown field {key!r}; {self._fields_hint()}")
                    continue
                if f.name in seen:
                    problems.add(
                        i, f.name, f"row {i}: field {f.name!r} is given twice "
                        f"(as {seen[f.name]!r} and {key!r})"
                    )  # fmt: skip
                    continue
                seen[f.name] = key
                if f.kind == "user_id":
                    continue  # the server's to fill
                try:
                    given[f.name][i] = _convert_value(f, value, flat=flat)
                except _Bad as bad:
                    problems.add(i, f.name, f"row {i}: field {f.name!r} {bad}")
            if require_all:
                for f in self.fields:
                    if f.required and f.kind != "user_id" and f.name not in seen:
                        problems.add(i, f.name, f"row {i}: field {f.name!r} is missing (required)")
        if not require_all:
            for f in self.fields:
                values = given.get(f.name)
                if values is None or not f.required:
                    continue
                absent = [i for i, v in enumerate(values) if v is _ABSENT]
                if absent and len(absent) < n:
                    i = absent[0]
                    problems.add(
                        i, f.name, f"row {i}: field {f.name!r} is missing; in a partial update "
                        "give a required field in every row or in none"
                    )  # fmt: skip
        problems.raise_if_any()

        out: dict[str, np.ndarray] = {}
        for f in self.fields:
            if f.kind == "user_id":
                out[f.name] = _filled(user, n)
                continue
            values = given[f.name]
            if not require_all and all(v is _ABSENT for v in values):
                continue
            key = f"{f.name}_position" if f.is_point else f.name
            out[key] = _assemble(f, values)
        return out

    def frame_to_columns(
        self, columns: Mapping[str, Any], *, user: str | None = None
    ) -> dict[str, np.ndarray]:
        """Validate a table of flat columns (bulk path) and return flat, non-derived columns.

        ``columns`` is a pandas DataFrame, a pyarrow Table / RecordBatch or a mapping of
        column name to array-like. A point is a ``<f>_position`` column (an ``(n, 3)`` array or
        a column of 3-sequences, e.g. an Arrow list column) or three ``<f>_position_x/_y/_z``
        columns. Other columns are named like the fields. :data:`IGNORED_KEYS`, derived
        ``<pt>_supervoxel_id``/``<pt>_root_id`` and ``user_id`` columns are ignored; optional
        fields may be left out. Output and missing values as in :meth:`records_to_columns`.

        Numeric columns are converted without a Python loop over rows. Errors name the column
        and the first offending row.

        >>> s = get_schema("bound_tag")
        >>> cols = s.frame_to_columns({"pt_position_x": [1], "pt_position_y": [2], "pt_position_z": [3], "tag": ["a"]})
        >>> cols["pt_position"].tolist()
        [[1.0, 2.0, 3.0]]
        """
        names, get = _frame_access(columns, self.name)
        problems = _Problems(self.name)
        by_name = {f.name: f for f in self.fields}
        points = {f"{p}_position": p for p in self.spatial_points}
        split = {f"{p}_position_{ax}": (p, ax) for p in self.spatial_points for ax in _AXES}
        ignored = (
            IGNORED_KEYS
            | self._derived_names()
            | {f.name for f in self.fields if f.kind == "user_id"}
        )
        whole: dict[str, str] = {}  # point field -> "<f>_position" column
        parts: dict[str, dict[str, str]] = {}  # point field -> axis -> column
        scalar: dict[str, str] = {}
        unknown: list[str] = []
        for c in names:
            if not isinstance(c, str):
                unknown.append(repr(c))
            elif c in ignored:
                continue
            elif c in points:
                whole[points[c]] = c
            elif c in split:
                p, ax = split[c]
                parts.setdefault(p, {})[ax] = c
            elif c in by_name and not by_name[c].is_point:
                scalar[c] = c
            else:
                unknown.append(c)
        if unknown:
            problems.add(
                None, unknown[0], f"unknown column(s) {', '.join(map(repr, unknown))}; "
                f"schema {self.name!r} takes columns {self._columns_hint()}"
            )  # fmt: skip
        for p, axes in parts.items():
            if p in whole:
                problems.add(
                    None, p, f"point {p!r} is given both as {whole[p]!r} and as "
                    f"{p}_position_x/_y/_z columns; give one form"
                )  # fmt: skip
            elif len(axes) < 3:
                lacking = [f"{p}_position_{ax}" for ax in _AXES if ax not in axes]
                problems.add(None, p, f"point {p!r} lacks column(s) {', '.join(lacking)}")
        for f in self.fields:
            given = f.name in whole or f.name in parts or f.name in scalar
            if f.required and f.kind != "user_id" and not given:
                form = f"{f.name}_position (or {f.name}_position_x/_y/_z)" if f.is_point else f.name
                problems.add(None, f.name, f"missing required column {form}")
        problems.raise_if_any()

        raw: dict[str, Any] = {}
        for c in [
            *whole.values(),
            *scalar.values(),
            *(c for a in parts.values() for c in a.values()),
        ]:
            raw[c] = get(c)
        n = _common_length(raw, self.name)

        out: dict[str, np.ndarray] = {}
        for f in self.fields:
            try:
                if f.kind == "user_id":
                    out[f.name] = _filled(user, n)
                elif f.is_point:
                    key = f"{f.name}_position"
                    if f.name in whole:
                        out[key] = _point_column(f, whole[f.name], raw[whole[f.name]], n)
                    elif f.name in parts:
                        axes = [parts[f.name][ax] for ax in _AXES]
                        out[key] = _split_point_columns(f, axes, [raw[c] for c in axes], n)
                    else:
                        out[key] = np.full((n, 3), np.nan)
                elif f.name in scalar:
                    out[f.name] = _scalar_column(f, f.name, raw[f.name])
                else:
                    out[f.name] = _missing_column(f, n)
            except _ColumnBad as bad:
                problems.add(bad.row, f.name, bad.message)
        problems.raise_if_any()
        return out

    # --------------------------------------------------------------- helpers
    def _derived_names(self) -> frozenset[str]:
        return frozenset(
            f"{p}_{suffix}" for p in self.bound_points for suffix in ("supervoxel_id", "root_id")
        )

    def _fields_hint(self) -> str:
        fields = ", ".join(f.name for f in self.fields)
        return f"schema {self.name!r} has fields {fields} ({', '.join(sorted(IGNORED_KEYS))} are ignored)"

    def _columns_hint(self) -> str:
        return ", ".join(c.name for c in self.columns() if not c.derived)


# --------------------------------------------------------------------------- errors
class _Problems:
    """Collects problems with client data; raises one :class:`InputError` for all of them."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.items: list[dict[str, Any]] = []
        self.count = 0

    def add(self, row: int | None, field: str | None, message: str) -> None:
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append({"row": row, "field": field, "message": message})

    def raise_if_any(self) -> None:
        if not self.count:
            return
        text = "; ".join(p["message"] for p in self.items)
        if self.count > len(self.items):
            text += f"; and {self.count - len(self.items)} more problem(s)"
        first = self.items[0]
        raise InputError(
            f"invalid {self.schema!r} annotations: {text}",
            schema=self.schema,
            field=first["field"],
            row=first["row"],
            problems=self.items,
            problem_count=self.count,
        )


class _Bad(Exception):
    """A bad single value; the text completes ``field 'x' ...``."""


class _ColumnBad(Exception):
    """A bad column: the full message and the first offending row (or None)."""

    def __init__(self, row: int | None, message: str) -> None:
        super().__init__(message)
        self.row = row
        self.message = message


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if isinstance(value, (str, bool, np.bool_, dict, list, tuple)) or value is None:
        return text
    return f"{text} ({type(value).__name__})"


# ------------------------------------------------------------------ single-value checks
class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    t = type(value)
    if t is float:
        return value != value
    if t in _PLAIN_TYPES:
        return False
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return type(value).__name__ in ("NAType", "NaTType")  # pandas' NA markers


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _xyz(value: Any) -> tuple[float, float, float]:
    """``[x, y, z]`` -> floats, or :class:`_Bad` (message without the ``needs`` clause)."""
    if type(value) in (list, tuple) and len(value) == 3:  # fast path: plain JSON numbers
        x, y, z = value
        if type(x) in _JSON_NUMBERS and type(y) in _JSON_NUMBERS and type(z) in _JSON_NUMBERS:
            x, y, z = float(x), float(y), float(z)
            if math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
                return (x, y, z)
            raise _Bad
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == 3:
        if all(_is_number(v) for v in value):
            x, y, z = (float(v) for v in value)
            if math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
                return (x, y, z)
    raise _Bad


def _check_point(f: Field, value: Any, flat: bool) -> tuple[float, float, float] | None:
    needs = _XYZ_NEEDS if flat else _POINT_NEEDS
    if _is_missing(value):
        if f.required:
            raise _Bad(f"is required, got null ({needs})")
        return None
    position = value
    if not flat:
        if not isinstance(value, Mapping) or "position" not in value:
            raise _Bad(f"{needs}, got {_show(value)}")
        if len(value) > 1 and not _POINT_KEYS.issuperset(value):
            extra = sorted(set(value) - _POINT_KEYS, key=str)
            raise _Bad(f"{needs}, got unknown key(s) {', '.join(map(repr, extra))}")
        position = value["position"]
        if _is_missing(position) and not f.required:
            return None
    try:
        return _xyz(position)
    except _Bad:
        raise _Bad(f"{needs}, got {_show(value)}") from None


def _check_float(f: Field, value: Any) -> float:
    if not _is_number(value):
        raise _Bad(f"needs a number, got {_show(value)}")
    x = float(value)
    if not math.isfinite(x):
        raise _Bad(f"needs a finite number, got {_show(value)}")
    return x


def _check_integer(f: Field, value: Any) -> int:
    what = "a non-negative integer (an annotation id)" if f.kind == "target_id" else "an integer"
    if not _is_number(value):
        raise _Bad(f"needs {what}, got {_show(value)}")
    if isinstance(value, (float, np.floating)):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise _Bad(f"needs {what}, got {_show(value)}")
    i = int(value)
    if not _INT64_MIN <= i <= _INT64_MAX:
        raise _Bad(f"needs {what} within the int64 range, got {i}")
    if f.kind == "target_id" and i < 0:
        raise _Bad(f"needs {what}, got {i}")
    return i


def _check_boolean(f: Field, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _Bad(f"needs true or false, got {_show(value)}")
    return bool(value)


def _check_string(f: Field, value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"needs a string, got {_show(value)}")
    return value


_CHECKS: dict[str, Callable[[Field, Any], Any]] = {
    "float": _check_float,
    "integer": _check_integer,
    "target_id": _check_integer,
    "boolean": _check_boolean,
    "string": _check_string,
}


def _convert_value(f: Field, value: Any, *, flat: bool = False) -> Any:
    """One client value -> a Python value (None for a missing optional value), or _Bad."""
    if f.is_point:
        return _check_point(f, value, flat)
    if _is_missing(value):
        if f.required:
            raise _Bad("is required, got null")
        return None
    out = _CHECKS[f.kind](f, value)
    if f.choices is not None and out not in f.choices:
        raise _Bad(f"must be one of {', '.join(map(repr, f.choices))}, got {_show(value)}")
    return out


_NAN3 = (math.nan, math.nan, math.nan)
_NUMPY = {"float64": np.float64, "int64": np.int64, "bool": np.bool_}


def _assemble(f: Field, values: list[Any]) -> np.ndarray:
    """Validated Python values (None/_ABSENT = missing) -> the output array of field ``f``."""
    n = len(values)
    if f.is_point:
        out = np.array([_NAN3 if v is None or v is _ABSENT else v for v in values], np.float64)
        return out.reshape(n, 3)
    dtype = _DTYPE[f.kind]
    if dtype == "string":
        arr = np.empty(n, dtype=object)
        arr[:] = [None if v is _ABSENT else v for v in values]
        return arr
    fill = math.nan if dtype == "float64" else 0
    return np.array([fill if v is None or v is _ABSENT else v for v in values], _NUMPY[dtype])


def _filled(value: Any, n: int) -> np.ndarray:
    arr = np.empty(n, dtype=object)
    arr[:] = [value] * n
    return arr


def _missing_column(f: Field, n: int) -> np.ndarray:
    dtype = _DTYPE[f.kind]
    if dtype == "string":
        return np.full(n, None, dtype=object)
    return np.full(n, math.nan if dtype == "float64" else 0, dtype=_NUMPY[dtype])


# ------------------------------------------------------------------- column checks
def _frame_access(columns: Any, schema: str) -> tuple[list[Any], Callable[[Any], Any]]:
    """Column names and a getter for a DataFrame, an Arrow table/batch or a mapping."""
    if hasattr(columns, "column_names") and hasattr(columns, "column"):  # pyarrow
        return list(columns.column_names), columns.column
    if hasattr(columns, "columns") and hasattr(columns, "iloc"):  # pandas
        return list(columns.columns), columns.__getitem__
    if isinstance(columns, Mapping):
        return list(columns.keys()), columns.__getitem__
    raise InputError(
        f"annotations for schema {schema!r} must be a DataFrame, an Arrow table or a mapping "
        f"of columns, got {type(columns).__name__}",
        schema=schema,
    )


def _length(col: Any) -> int:
    shape = getattr(col, "shape", None)
    if shape is not None and len(shape) >= 1:
        return int(shape[0])
    return len(col)


def _common_length(raw: Mapping[str, Any], schema: str) -> int:
    lengths = {c: _length(v) for c, v in raw.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(
            f"columns of different lengths for schema {schema!r}: "
            + ", ".join(f"{c}={n}" for c, n in lengths.items()),
            schema=schema,
        )
    return next(iter(lengths.values()), 0)


def _is_arrow(col: Any) -> bool:
    return type(col).__module__.startswith("pyarrow")


def _as_numpy(col: Any) -> np.ndarray:
    """A column as a numpy array (no Python loop for numeric data)."""
    if isinstance(col, np.ndarray):
        return col
    if _is_arrow(col):
        return np.asarray(col.to_numpy(zero_copy_only=False))
    if hasattr(col, "to_numpy"):  # pandas Series / Index
        return np.asarray(col.to_numpy())
    try:
        arr = np.asarray(col)
    except ValueError:  # ragged nested lists
        return _object_array(list(col))
    if arr.dtype.kind in "US" and isinstance(col, (list, tuple)):
        return _object_array(list(col))  # numpy would have turned numbers into strings
    return arr


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _bad_row(column: str, row: int, tail: str) -> _ColumnBad:
    return _ColumnBad(row, f"row {row}: column {column!r} {tail}")


def _loop_convert(f: Field, column: str, arr: np.ndarray) -> list[Any]:
    """Slow path for object columns: check each value like a record value."""
    out = []
    for i, v in enumerate(arr):
        try:
            out.append(_convert_value(f, v))
        except _Bad as bad:
            raise _bad_row(column, i, str(bad)) from None
    return out


def _scalar_column(f: Field, column: str, col: Any) -> np.ndarray:
    arr = _as_numpy(col)
    if arr.ndim != 1:
        raise _ColumnBad(None, f"column {column!r} must be 1-D, got shape {arr.shape}")
    dtype = _DTYPE[f.kind]
    if arr.dtype.kind == "O" and not (dtype == "string" and all(type(v) is str for v in arr)):
        return _assemble(f, _loop_convert(f, column, arr))  # mixed objects, None/NA: one by one
    if arr.dtype.kind not in _ACCEPTED_KINDS[dtype]:
        if len(arr):
            raise _bad_row(column, 0, _describe_bad(f, arr[0]))
        return _missing_column(f, 0)
    if f.choices is not None and len(arr):
        bad = ~np.isin(arr, np.asarray(f.choices, dtype=arr.dtype if dtype == "string" else None))
        if bad.any():
            i = _first(bad)
            raise _bad_row(column, i, _describe_bad(f, arr[i]))
    if dtype == "string":
        return arr.astype(object)
    if dtype == "bool":
        return arr.astype(np.bool_, copy=False)
    if dtype == "int64":
        return _int_column(f, column, arr)
    out = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(out) if f.required else np.isinf(out)
    if bad.any():
        i = _first(bad)
        raise _bad_row(column, i, _describe_bad(f, out[i]))
    return out


_ACCEPTED_KINDS = {"string": "UO", "bool": "b", "float64": "iuf", "int64": "iuf"}


def _describe_bad(f: Field, value: Any) -> str:
    try:
        _convert_value(f, value.item() if isinstance(value, np.generic) else value)
    except _Bad as bad:
        return str(bad)
    return f"has an unexpected value {_show(value)}"  # pragma: no cover - defensive


def _int_column(f: Field, column: str, arr: np.ndarray) -> np.ndarray:
    kind = arr.dtype.kind
    if kind == "u":
        if len(arr) and arr.max() > _INT64_MAX:
            i = _first(arr > _INT64_MAX)
            raise _bad_row(column, i, _describe_bad(f, int(arr[i])))
        out = arr.astype(np.int64)
    elif kind == "i":
        out = arr.astype(np.int64, copy=False)
    else:  # float
        finite = np.isfinite(arr)
        nan = np.isnan(arr)
        ok = (finite & (arr == np.floor(arr)) & (arr >= _INT64_MIN) & (arr < 2.0**63)) | (
            nan & (not f.required)
        )
        if not ok.all():
            i = _first(~ok)
            raise _bad_row(column, i, _describe_bad(f, float(arr[i])))
        out = np.where(nan, 0, arr).astype(np.int64)
    if f.kind == "target_id" and len(out) and (out < 0).any():
        i = _first(out < 0)
        raise _bad_row(column, i, _describe_bad(f, int(out[i])))
    return out


def _finish_points(f: Field, column: str, pts: np.ndarray) -> np.ndarray:
    """Check finiteness; a missing optional point is a row of three NaNs."""
    finite = np.isfinite(pts)
    if finite.all():
        return pts
    row_ok = finite.all(axis=1)
    if not f.required:
        row_ok |= np.isnan(pts).all(axis=1)
    if row_ok.all():
        return pts
    i = _first(~row_ok)
    return_value = pts[i].tolist()
    raise _bad_row(column, i, f"{_XYZ_NEEDS}, got {return_value}")


def _point_column(f: Field, column: str, col: Any, n: int) -> np.ndarray:
    pts = _arrow_points(col, n) if _is_arrow(col) else None
    if pts is None:
        if _is_arrow(col):
            arr = _object_array(col.to_pylist())
        elif isinstance(col, (list, tuple)):  # rows of Python values: keep each row whole
            arr = _object_array(list(col))
        else:
            arr = _as_numpy(col)
        if arr.ndim == 2:
            if arr.shape[1] != 3 or arr.dtype.kind not in "iuf":
                row = 0 if len(arr) else None
                raise _ColumnBad(
                    row, f"column {column!r} {_XYZ_NEEDS} per row, got an array of shape "
                    f"{arr.shape} and dtype {arr.dtype}"
                )  # fmt: skip
            pts = arr.astype(np.float64, copy=False)
        elif arr.ndim == 1 and (arr.dtype.kind == "O" or len(arr) == 0):
            pts = _stack_points(f, column, arr)
        else:
            raise _ColumnBad(
                0 if len(arr) else None,
                f"column {column!r} {_XYZ_NEEDS} per row, got {arr.dtype} values"
                + (f" (row 0: {_show(arr[0])})" if len(arr) else ""),
            )
    return _finish_points(f, column, pts.reshape(n, 3))


def _object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array of the values (nested sequences stay whole)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _stack_points(f: Field, column: str, arr: np.ndarray) -> np.ndarray:
    """A 1-D object column of 3-sequences -> ``(n, 3)``; the slow path finds the bad row."""
    if len(arr) == 0:
        return np.zeros((0, 3))
    try:
        stacked = np.array(arr.tolist())
        if stacked.shape == (len(arr), 3) and stacked.dtype.kind in "iuf":
            return stacked.astype(np.float64, copy=False)
    except (ValueError, TypeError):
        pass
    out = np.empty((len(arr), 3))
    for i, v in enumerate(arr):
        try:
            p = _check_point(f, v.tolist() if isinstance(v, np.ndarray) else v, True)
        except _Bad as bad:
            raise _bad_row(column, i, str(bad)) from None
        out[i] = _NAN3 if p is None else p
    return out


def _arrow_points(col: Any, n: int) -> np.ndarray | None:
    """Fast path for Arrow list columns of 3 numbers without nulls (else None)."""
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return None
    if arr.null_count or not (
        pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)
    ):
        return None
    if not pa.types.is_fixed_size_list(t):
        offsets = arr.offsets.to_numpy()
        if not (np.diff(offsets) == 3).all():
            return None
    values = arr.flatten()
    if values.null_count or len(values) != 3 * n:
        return None
    return values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False).reshape(n, 3)


def _split_point_columns(f: Field, names: list[str], cols: list[Any], n: int) -> np.ndarray:
    axis_field = Field(f.name, "float", False)
    parts = [_scalar_column(axis_field, c, col) for c, col in zip(names, cols)]
    pts = np.column_stack(parts) if n else np.zeros((0, 3))
    try:
        return _finish_points(f, f"{f.name}_position", pts)
    except _ColumnBad as bad:
        i = bad.row if bad.row is not None else 0
        raise _ColumnBad(
            i, f"row {i}: columns {', '.join(names)} need 3 finite numbers, got {pts[i].tolist()}"
        ) from None


def _copy_json(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy_json(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy_json(v) for v in doc]
    return doc


# --------------------------------------------------------------------------- registry
def _f(
    name: str,
    kind: FieldKind,
    description: str = "",
    *,
    required: bool = True,
    choices: tuple[str, ...] | tuple[int, ...] | None = None,
    json: Mapping[str, Any] | None = None,
    **json_extra: Any,
) -> Field:
    """A :class:`Field`; ``json``/keyword extras go to :attr:`Field.json_extra`."""
    extra = {**(json or {}), **json_extra}
    return Field(name, kind, required, description, choices, extra or None)


def _opt(name: str, kind: FieldKind, description: str = "", **kw: Any) -> Field:
    return _f(name, kind, description, required=False, **kw)


def _root_id_value(name: str, description: str) -> Field:
    """CAVE's ``NumericField``: an int64 (often a root ID) rendered as a bare JSON integer."""
    return _f(name, "integer", description, json=_NUMERIC_FIELD_JSON)


_NUMERIC_FIELD_JSON = {"title": None, "format": None, "description": None, "type": "integer"}


# Fields shared by several schemas (descriptions as in EMAnnotationSchemas).
_TARGET_ID = _f("target_id", "target_id", "annotation this references")
_PRE_PT = _f("pre_pt", "bound_point",
             "a nearby point located in the presynaptic compartment of the synapse", order=0)  # fmt: skip
_POST_PT = _f("post_pt", "bound_point",
              "a nearby point located in the postsynaptic compartment of the synapse", order=2)  # fmt: skip
_CTR_PT = _f("ctr_pt", "spatial_point", "central point", order=1)
_SYN_SIZE = _opt("size", "float", "size of synapse")
_CONNECTION_SCORE = _opt("connection_score", "float", "score assigned by Buhmann et al. 2019")
_CLEFT_SCORE = _opt("cleft_score", "float", "score derived by Buhmann et al. 2019 by combining "
                    "their synapses with the synapse segmentation from Heinrich et al. 2018")  # fmt: skip
_TAG_PT = _f("pt", "bound_point", "Location associated with the tag")
_TAG2_PT = _f("pt2", "bound_point", "Location associated with the tag")
_TAG = _f("tag", "string", "Arbitrary text tag")
_TAG2 = _f("tag2", "string", "Arbitrary text tag")
_BOOL_TAG = _f("tag", "boolean", "Boolean at location")
_REF_TAG = _f("tag", "string", "tag to attach to annoation")
_TAG_USER = _f("user_id", "user_id", "User who created the tag, auto-populated from auth.")
_CLASS_PT = _f("pt", "bound_point", "Location associated with classification")
_CELL_TYPE = _f("cell_type", "string", "Cell type name")
_CLASS_SYSTEM = _f("classification_system", "string", "Classification system followed")
_PROOF_PT = _f("pt", "bound_point", "Core location on proofread object")
_PROOF_VALID_ID = _root_id_value(
    "valid_id", "Root id of the object when proofread status was assigned. If the pt_root_id "
    "of the cell differs, the proofreading status may not apply."
)  # fmt: skip
_LOC_VALID_ID = _root_id_value(
    "valid_id", "Root id of the object when location was assessed. If the pt_root_id has "
    "changed, the associated segment has undergone proofreading."
)  # fmt: skip
_PROOF_CHOICES = ("non", "clean", "extended")
_PROOF_OPTIONS = (
    "Options are: 'non' to indicate no comprehensive proofreading, 'clean' to indicate "
    "comprehensive removal of false merges, and 'extended' to mean comprehensive extension of "
    "neurite tips"
)
_HEMISPHERE = _f("hemisphere", "string", "Cell hemisphere", choices=("L", "R", "M", "U"),
                 default="U")  # fmt: skip
_FUNC_PT = _f("pt", "bound_point", "location of cell body of functional cell")
_SESSION = _f("session", "integer", "session ID of imaging")
_SCAN_IDX = _f("scan_idx", "integer", "index of the scan within the session")
_UNIT_ID = _f("unit_id", "integer", "unique functional cell ID within the scan")
_RESIDUAL = _opt("residual", "float",
                 "distance between nucleus centroid and functional centroid after transformation")  # fmt: skip
_GOSI = _f("gOSI", "float", "global orientation selectivity index")
_GDSI = _f("gDSI", "float", "global direction selectivity index")
_QUERY_ROOT_ID = _root_id_value("query_root_id", "Static root ID used for score calculation")
_MATCH_ID = _f("match_id", "string", "Unique identifier for cell from another dataset", index=True)
_ATTACH_PT = _f("pt", "bound_point",
                "the point to be used for attaching objects to the dynamic segmentation")  # fmt: skip


def _schema(
    name: str,
    class_name: str,
    description: str,
    *fields: Field,
    rule: PostLoadRule | None = None,
) -> Schema:
    return Schema(name, class_name, fields, description, rule)


_SYNAPSE_RULE: PostLoadRule = "distinct_roots"

# One entry per EMAnnotationSchemas type (emannotationschemas 5.26.3, ``type_mapping``), fields
# in declared order (inherited fields first), which is CAVE's flattening order.
_REGISTRY: dict[str, Schema] = {
    s.name: s
    for s in (
        _schema("synapse", "SynapseSchema",
                "A synapse: a presynaptic and a postsynaptic bound point, a central point and a size.",
                _PRE_PT, _POST_PT, _CTR_PT, _SYN_SIZE, rule=_SYNAPSE_RULE),
        _schema("nocleft_synapse", "NoCleftSynapse",
                "A synapse without a cleft point: pre and post bound points and a score.",
                _PRE_PT, _POST_PT,
                _opt("score", "float", "synapse score (see table metadata for description of score)"),
                rule=_SYNAPSE_RULE),
        _schema("nocenter_synapse", "NoCenterSynapse",
                "A synapse without a central point: pre and post bound points and a size.",
                _PRE_PT, _POST_PT, _SYN_SIZE, rule=_SYNAPSE_RULE),
        _schema("fly_synapse", "BuhmannSynapseSchema",
                "A fly synapse with Buhmann et al. 2019 scores.",
                _PRE_PT, _POST_PT, _CONNECTION_SCORE, _CLEFT_SCORE, rule=_SYNAPSE_RULE),
        _schema("fly_nt_synapse", "BuhmannEcksteinSynapseSchema",
                "A fly synapse with Buhmann scores and Eckstein et al. 2020 neurotransmitter probabilities.",
                _PRE_PT, _POST_PT, _CONNECTION_SCORE, _CLEFT_SCORE,
                _opt("gaba", "float", "Gaba probability by Eckstein et al. 2020"),
                _opt("ach", "float", "Acetylcholine probability by Eckstein et al. 2020"),
                _opt("glut", "float", "Glutamate probability by Eckstein et al. 2020"),
                _opt("oct", "float", "Octopamine probability by Eckstein et al. 2020"),
                _opt("ser", "float", "Serotonin probability by Eckstein et al. 2020"),
                _opt("da", "float", "Dopamine probability by Eckstein et al. 2020"),
                _opt("valid_nt", "boolean", "False = no neurotransmitter prediction available."),
                rule=_SYNAPSE_RULE),
        _schema("plastic_synapse", "PlasticSynapse",
                "A synapse with a plasticity state (0 not synapse, 1 normal, 2 mild, 3 strong, 4 not rated).",
                _PRE_PT, _POST_PT, _CTR_PT, _SYN_SIZE,
                _f("plasticity", "integer",
                   "plasticity state 0:not synapse 1:normal 2:mild 3:strong 4:not rated",
                   choices=(0, 1, 2, 3, 4)),
                rule=_SYNAPSE_RULE),
        _schema("reference_synapse_valid", "ValidSynapse",
                "A validity flag attached to a synapse of another table.",
                _TARGET_ID, _f("is_valid", "boolean", "Valid annotation for synapses")),
        _schema("contact", "Contact",
                "A contact between two objects: a bound point on each side, an optional interface point and size.",
                _opt("size", "integer", "contact area (in units of voxel count)"),
                _f("sidea_pt", "bound_point", "point on sidea of contact"),
                _f("sideb_pt", "bound_point", "point on sideb of contact"),
                _opt("ctr_pt", "spatial_point", "point on contact interface"),
                rule="distinct_roots"),
        _schema("glia_contact", "GliaContact",
                "A contact between a glial cell and another object.",
                _f("glia_pt", "bound_point", "Glia-side point near a glia-object contact", order=0),
                _f("object_pt", "bound_point", "Object-side point near a glia-object contact", order=2),
                _opt("size", "float", "size of contact")),
        _schema("bouton_shape", "BoutonShape",
                "The shape of a bouton, attached to another annotation.",
                _TARGET_ID,
                _f("shape", "string", "first example of description of a bouton shape",
                   choices=("pancake", "basmati", "potato"))),
        _schema("presynaptic_bouton_type", "PresynapticBoutonType",
                "The presynaptic type of a bouton, attached to another annotation.",
                _TARGET_ID,
                _f("bouton_type", "string", "Presynaptic type based on bouton",
                   choices=("pancake", "basmati", "potato", "sst", "vertical", "vip", "ivy",
                            "clutch", "chandelier"))),
        _schema("postsynaptic_compartment", "PostsynapticCompartment",
                "The postsynaptic compartment a synapse targets, attached to the synapse.",
                _TARGET_ID,
                _f("compartment", "string",
                   "Compartment of the postsynaptic neuron                       targeted by the synapse",
                   choices=("soma", "dendrite", "axon")),
                _opt("on_spine", "boolean", "Boolean representing if the synapse is onto a spine or not"),
                _opt("dendrite_class", "string", "Type of dendritic branch, e.g. basal or apical",
                     choices=("basal", "apical"))),
        _schema("spine_with_info", "SpineWithInfo",
                "A dendritic spine with its volume and number of inputs.",
                _f("pt", "bound_point", "Spatial point representing the location of the spine"),
                _opt("volume", "float", "Estimated volume of the spine"),
                _opt("n_inputs", "integer", "Number of synaptic inputs (unique root IDs) onto the spine")),
        _schema("microns_func_coreg", "FunctionalCoregistration",
                "A functionally imaged cell matched to a point in the EM volume.",
                _FUNC_PT, _f("func_id", "integer", "functional cell ID")),
        _schema("microns_func_unit_coreg", "FunctionalUnitCoregistration",
                "A functional unit (session, scan, unit) matched to a point in the EM volume.",
                _FUNC_PT, _SESSION, _SCAN_IDX, _UNIT_ID),
        _schema("v1dd_func_unit_coreg", "V1DDFunctionalUnitCoregistration",
                "A V1DD functional unit (column, volume, plane, roi) matched to a point in the EM volume.",
                _FUNC_PT,
                _f("column", "integer",
                   "The index of the column, a set of volumes that were vertically stacked"),
                _f("volume", "integer", "index of the volume within the column"),
                _opt("plane", "integer", "index of imaging plane within the volume"),
                _f("roi", "integer", "index of the roi within the plane"),
                _RESIDUAL, _opt("score", "float", "a confidence score associated with match")),
        _schema("func_unit_ext_coreg", "FunctionalUnitCoregistrationExtended",
                "A functional unit matched to another annotation, with field, residual and score.",
                _TARGET_ID, _SESSION, _SCAN_IDX, _UNIT_ID,
                _opt("field", "integer", "index of imaging field of cell within the scan"),
                _RESIDUAL, _opt("score", "float", "confidence score associated with match")),
        _schema("func_properties_bcm", "FunctionalPropertiesBCM",
                "Functional tuning properties of a unit, attached to another annotation.",
                _TARGET_ID, _SESSION, _SCAN_IDX, _UNIT_ID,
                _f("pref_ori", "float", "preferred orientation in radians (0 - pi)"),
                _f("pref_dir", "float", "preferred direction in radians (0 - 2pi)"),
                _GOSI, _GDSI,
                _f("cc_abs", "float", "prediction performance of the model, higher is better")),
        _schema("digital_twin_properties", "DigitalTwinPropertiesBCM",
                "Digital-twin model properties of a unit, attached to another annotation.",
                _TARGET_ID, _SESSION, _SCAN_IDX, _UNIT_ID,
                _f("pref_ori", "float", "Preferred orientation in degrees (0 - 180), vertical bar "
                   "moving right is 0 and orientation increases counter-clockwise"),
                _f("pref_dir", "float", "Preferred direction in degrees (0 - 360), vertical bar "
                   "moving right is 0 and orientation increases counter-clockwise"),
                _GOSI, _GDSI,
                _f("cc_abs", "float",
                   "Test set performance of the digital twin model unit, higher is better"),
                _f("cc_max", "float", "Neuron variability score used to normalize digital twin "
                   "model unit performance"),
                _f("cc_norm", "float", "Normalized model unit performance, higher is better"),
                _f("OSI", "float", "orientation selectivity index"),
                _f("DSI", "float", "direction selectivity index"),
                _f("readout_loc_x", "float", "X coordinate of the readout location, an "
                   "approximation of receptive field center in stimulus space; (-1, -1) "
                   "bottom-left, (1, 1) top-right"),
                _f("readout_loc_y", "float", "Y coordinate of the readout location, an "
                   "approximation of receptive field center in stimulus space; (-1, -1) "
                   "bottom-left, (1, 1) top-right")),
        _schema("simple_reference", "ReferenceAnnotation",
                "A bare reference to an annotation of another table.",
                _TARGET_ID),
        _schema("reference_tag", "ReferenceTagAnnotation",
                "A text tag attached to an annotation of another table.",
                _REF_TAG, _TARGET_ID),
        _schema("reference_integer", "ReferenceInteger",
                "An integer value attached to an annotation of another table.",
                _TARGET_ID, _f("value", "integer", "Integer value to be attached to the annotation")),
        _schema("reference_tag_float", "ReferenceTagFloat",
                "A text tag and a float value attached to an annotation of another table.",
                _REF_TAG, _TARGET_ID,
                # the real schema misspells the JSON key ("desription"); reproduced as served
                _f("value", "float", "Float value to be attached to the annotation",
                   json={"description": None,
                         "desription": "Float value to be attached to the annotation"})),
        _schema("reference_tag_with_confidence", "ReferenceTagWithConfidence",
                "A confidence value attached to an annotation of another table.",
                _TARGET_ID,
                _f("confidence", "float", "Confidence value to be attached to the annotation")),
        _schema("reference_point", "FlatSegmentationReferenceSinglePoint",
                "A bound point attached to an annotation of another table.",
                _TARGET_ID, _ATTACH_PT),
        _schema("representative_point", "RepresentativePoint",
                "A single bound point representing an object.",
                _ATTACH_PT),
        _schema("reference_simple_group", "SimpleGroup",
                "A group id attached to an annotation of another table.",
                _TARGET_ID, _f("group_id", "integer", "group id")),
        _schema("reference_simple_group_indexed", "SimpleGroupIndexed",
                "An (indexed) group id attached to an annotation of another table.",
                _TARGET_ID, _f("group_id", "integer", "group id", index=True)),
        _schema("cell_type_local", "CellTypeLocal",
                "A cell type in a classification system, at a bound point.",
                _CLASS_SYSTEM, _CELL_TYPE, _CLASS_PT, rule="cell_type_allowlist"),
        _schema("cell_type_reference", "CellTypeReference",
                "A cell type in a classification system, attached to another annotation.",
                _TARGET_ID, _CLASS_SYSTEM, _CELL_TYPE, rule="cell_type_allowlist"),
        _schema("cell_type_reference_user", "CellTypeReferenceUser",
                "A cell type attached to another annotation, with the user who set it.",
                _TARGET_ID, _CLASS_SYSTEM, _CELL_TYPE,
                _f("user_id", "user_id",
                   "User who created the cell type classification, auto-populated from auth."),
                rule="cell_type_allowlist"),
        _schema("extended_classical_cell_type", "ExtendedClassicalCellType",
                "A cell type from the extended classical list, at a bound point.",
                _f("pt", "bound_point", "Location in space"),
                _f("cell_type", "string", "cell type name"),
                rule="category_allowlist"),
        _schema("fly_cell_type", "FlyCellType",
                "A fly cell type and hemisphere at a bound point.",
                _CLASS_PT, _CELL_TYPE, _HEMISPHERE),
        _schema("fly_cell_type_ext", "FlyCellTypeExt",
                "A fly cell type and hemisphere at a bound point, with driver line and synonym.",
                _CLASS_PT, _CELL_TYPE, _HEMISPHERE,
                _opt("driver_line", "string", "Driver line name"),
                _opt("synonym", "string", "Synonym")),
        _schema("fly_neuropil", "FlyNeuropil",
                "A neuropil name attached to another annotation.",
                _TARGET_ID, _f("neuropil", "string", "neuropil name")),
        _schema("nucleus_detection", "NucleusDetection",
                "A detected nucleus: its volume (um^3), centroid and bounding box.",
                _opt("volume", "float", "the volume of the nucleus detected in um^3"),
                _f("pt", "bound_point", "the centroid of the nucleus, to be linked to the segmentation"),
                _opt("bb_start", "spatial_point", "low corner of the bounding box"),
                _opt("bb_end", "spatial_point", "high corner of the bounding box")),
        _schema("bound_tag", "BoundTagAnnotation",
                "A text tag at a bound point.",
                _TAG_PT, _TAG),
        _schema("bound_double_tag", "BoundDoubleTagAnnotation",
                "Two text tags at a bound point.",
                _TAG_PT, _TAG, _TAG2),
        _schema("bound_2tag", "Bound2TagAnnotation",
                "Two bound points, each with a text tag.",
                _TAG_PT, _TAG, _TAG2_PT, _TAG2),
        _schema("bound_tag_user", "BoundTagAnnotationUser",
                "A text tag at a bound point, with the user who made it.",
                _TAG_PT, _TAG, _TAG_USER),
        _schema("bound_double_tag_user", "BoundDoubleTagAnnotationUser",
                "Two text tags at a bound point, with the user who made them.",
                _TAG_PT, _TAG, _TAG2,
                _opt("user_id", "user_id", "User who created the tag, auto-populated from auth.")),
        _schema("bound_2tag_user", "Bound2TagAnnotationUser",
                "Two bound points with a text tag each, with the user who made them.",
                _TAG_PT, _TAG, _TAG2_PT, _TAG2, _TAG_USER),
        _schema("braincircuits_annotation_user", "BrainCircuitsBoundTagAnnotationUser",
                "A BrainCircuits text tag at a bound point, with the user who made it.",
                _TAG_PT, _TAG, _TAG_USER),
        _schema("bound_tag_bool", "BoundBoolAnnotation",
                "A boolean at a bound point.",
                _TAG_PT, _BOOL_TAG),
        _schema("bound_tag_bool_valid", "BoundBoolWithValid",
                "A boolean at a bound point, with the root ID it was judged on.",
                _TAG_PT, _BOOL_TAG, _LOC_VALID_ID),
        _schema("bound_tag_valid", "BoundTagWithValid",
                "A text tag at a bound point, with the root ID it was judged on.",
                _TAG_PT, _TAG, _LOC_VALID_ID),
        _schema("pt_bool_valid", "SpatialPointBoolWithValid",
                "A boolean at an unbound point, with the root ID it was judged on.",
                _f("pt", "spatial_point", "Location associated with the tag"), _BOOL_TAG,
                _root_id_value("valid_id", "Root id of the object when location was assessed.")),
        _schema("proofread_status", "ProofreadStatus",
                "The proofreading status (non/clean/extended) of an object and the root it was judged on.",
                _PROOF_PT, _PROOF_VALID_ID,
                _f("status", "string", f"Proofread status of cell. {_PROOF_OPTIONS}",
                   choices=_PROOF_CHOICES)),
        _schema("compartment_proofread_status", "CompartmentProofreadStatus",
                "Dendrite and axon proofreading statuses of an object and the root they were judged on.",
                _PROOF_PT, _PROOF_VALID_ID,
                _f("status_dendrite", "string",
                   f"Proofread status of the dendrite only. {_PROOF_OPTIONS}", choices=_PROOF_CHOICES),
                _f("status_axon", "string",
                   f"Proofread status of the axon only. {_PROOF_OPTIONS}", choices=_PROOF_CHOICES)),
        _schema("compartment_proofread_status_strategy", "CompartmentProofreadStatusStrategy",
                "Dendrite and axon proofreading flags and strategies of an object.",
                _PROOF_PT, _PROOF_VALID_ID,
                _f("status_dendrite", "boolean",
                   "Proofread status of the dendrite only. True indicates dendrite is at least clean."),
                _f("status_axon", "boolean",
                   "Proofread status of the axon only. True indicates axon is at least clean."),
                _f("strategy_dendrite", "string", "Strategy used when proofreading dendrite. "
                   "See table description for more details."),
                _f("strategy_axon", "string", "Strategy used when proofreading axon. "
                   "See table description for more details.")),
        _schema("proofreading_boolstatus_user", "ProofreadingBoolStatusUser",
                "Whether an object is proofread, the root it was judged on and the user who judged it.",
                _PROOF_PT, _PROOF_VALID_ID, _f("proofread", "boolean", "Proofread status of cell."),
                _f("user_id", "user_id",
                   "User who assessed the proofreading status, auto-populated from auth.")),
        _schema("cell_match", "CellMatch",
                "A cell matched to a cell of another dataset, with a score.",
                _f("pt", "bound_point",
                   "Source cell identity (pt_root_id, pt_supervoxel_id, pt_position)"),
                _QUERY_ROOT_ID, _MATCH_ID,
                _f("score", "float", "Normalised NBLAST similarity score [for CAVE schema, could "
                   "be any numeric score]"),
                _opt("validation", "boolean",
                     "False if not separately validated, True if separately validated", default=False)),
        _schema("cell_match_reference", "CellMatchReference",
                "A match to a cell of another dataset, attached to another annotation.",
                _TARGET_ID, _QUERY_ROOT_ID, _MATCH_ID,
                _f("score", "float", "Normalized NBLAST similarity score [for CAVE schema, could "
                   "be any numeric score]"),
                _opt("validation", "boolean",
                     "False if not validated by a human, True if validated by a human", default=False)),
        _schema("cell_similarity", "CellSimilarity",
                "A similarity score between two cells of this dataset.",
                _f("pt", "bound_point", "Query cell identity (pt_root_id, pt_supervoxel_id, pt_position)"),
                _f("match_pt", "bound_point",
                   "Target cell identity (match_root_id, match_supervoxel_id, match_position)"),
                _root_id_value("query_root_id",
                               "Static root ID for query cell at time of score calculation"),
                _root_id_value("match_root_id",
                               "Static root ID for target cell at time of score calculation"),
                _f("score", "float", "Numeric similarity score between the two cells")),
    )
}  # fmt: skip


def get_schema(name: str) -> Schema:
    """The schema type called ``name``.

    >>> get_schema("synapse").bound_points
    ('pre_pt', 'post_pt')
    >>> get_schema("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cavelab.server.errors.NotFoundError: unknown annotation schema 'nope'; known schemas: ...
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = schema_names()
        raise NotFoundError(
            f"unknown annotation schema {name!r}; known schemas: {', '.join(known)}",
            schema=name,
            known=known,
        ) from None


def schema_names() -> list[str]:
    """All schema type names, sorted.

    >>> "synapse" in schema_names() and schema_names() == sorted(schema_names())
    True
    """
    return sorted(_REGISTRY)


def all_jsonschemas() -> dict[str, dict[str, Any]]:
    """``{name: JSON-schema document}`` for every type (CAVE's ``/schema/api/v2/types_all``).

    >>> all_jsonschemas()["bound_tag"]["$ref"]
    '#/definitions/BoundTagAnnotation'
    """
    return {name: _REGISTRY[name].jsonschema() for name in schema_names()}
