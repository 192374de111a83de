"""Read an OME-Zarr (NGFF 0.4 on Zarr v2, NGFF 0.5 on Zarr v3) label volume.

Only what ``cavelab ingest`` needs: the finest scale (``datasets[0]``) of the
first multiscale image, with exactly three space axes ``x``, ``y``, ``z`` in any
order, read region by region in x, y, z order. Everything that is wrong with the
metadata is refused with an :class:`~cavelab.server.errors.IngestError` that names
the offending key and says how to fix it.

Examples
--------
>>> import tempfile, zarr
>>> d = tempfile.mkdtemp()
>>> a = zarr.create_array(f"{d}/seg.zarr/0", shape=(2, 3, 4), dtype="uint32", zarr_format=2)
>>> a[:] = np.arange(24, dtype="uint32").reshape(2, 3, 4)
>>> write_ngff_attrs(f"{d}/seg.zarr", axes=("z", "y", "x"), scale=(40, 8, 8), zarr_format=2)
>>> vol = open_ngff(f"{d}/seg.zarr")
>>> vol.shape, vol.resolution, vol.version
((4, 3, 2), (8.0, 8.0, 40.0), '0.4')
>>> vol.read(0, 2, 0, 1, 0, 2)[:, 0, :].tolist()  # x, z at y = 0
[[0, 12], [1, 13]]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cavelab.server.errors import IngestError

__all__ = ["UNIT_TO_NM", "NgffVolume", "open_ngff", "write_ngff_attrs"]

#: Accepted axis units and their size in nanometres.
UNIT_TO_NM: dict[str, float] = {
    "nanometer": 1.0,
    "nanometre": 1.0,
    "nm": 1.0,
    "micrometer": 1000.0,
    "micrometre": 1000.0,
    "micron": 1000.0,
    "um": 1000.0,
    "µm": 1000.0,
    "angstrom": 0.1,
    "ångström": 0.1,
    "å": 0.1,
}

_SPACE = ("x", "y", "z")


@dataclass
class NgffVolume:
    """The finest scale of an OME-Zarr label image, seen in x, y, z order.

    Attributes
    ----------
    path : Path
        The OME-Zarr group (``segmentation.zarr``).
    version : str
        NGFF version from the metadata (``"0.4"``, ``"0.5"``; ``"?"`` when absent).
    zarr_format : int
        2 or 3.
    dataset_path : str
        ``datasets[0].path`` inside the group.
    axes : tuple of str
        Axis names in the stored array's order, e.g. ``("z", "y", "x")``.
    shape : tuple of int
        Voxels along x, y, z.
    resolution : tuple of float
        Nanometres per voxel along x, y, z.
    dtype : numpy.dtype
        Stored integer dtype.
    chunks : tuple of int
        Stored chunk shape along x, y, z (read granularity).
    voxel_offset : tuple of int
        The whole-voxel ``translation`` (x, y, z), informational only.
    """

    path: Path
    version: str
    zarr_format: int
    dataset_path: str
    axes: tuple[str, ...]
    shape: tuple[int, int, int]
    resolution: tuple[float, float, float]
    dtype: np.dtype
    chunks: tuple[int, int, int]
    voxel_offset: tuple[int, int, int] = (0, 0, 0)
    _array: Any = field(default=None, repr=False, compare=False)

    # The zarr array handle is reopened lazily (e.g. after pickling into a worker process).
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    @property
    def array(self) -> Any:
        """The underlying zarr array (stored axis order)."""
        if self._array is None:
            self._array = _open_array(self.path, self.dataset_path)
        return self._array

    @property
    def signed(self) -> bool:
        return self.dtype.kind == "i"

    def _perm(self) -> tuple[int, int, int]:
        """Stored axis index of x, y and z."""
        return tuple(self.axes.index(a) for a in _SPACE)  # type: ignore[return-value]

    def read(self, x0: int, x1: int, y0: int, y1: int, z0: int, z1: int) -> np.ndarray:
        """Read the box ``[x0, x1) x [y0, y1) x [z0, z1)`` (clipped to the volume).

        Only the stored chunks overlapping the box are read. The result is indexed
        ``[x, y, z]``; it is a transposed view of the stored block when the stored axis
        order is not x, y, z (for the usual z, y, x it is Fortran-contiguous).

        Raises
        ------
        IngestError
            If a signed volume holds negative labels inside the box.
        """
        lo = [max(0, int(v)) for v in (x0, y0, z0)]
        hi = [min(int(s), int(v)) for s, v in zip(self.shape, (x1, y1, z1))]
        hi = [max(h, lv) for h, lv in zip(hi, lo)]
        perm = self._perm()
        sl: list[slice] = [slice(0, 0)] * 3
        for d in range(3):
            sl[perm[d]] = slice(lo[d], hi[d])
        if any(h == lv for h, lv in zip(hi, lo)):
            return np.zeros([h - lv for h, lv in zip(hi, lo)], dtype=self.dtype)
        block = np.asarray(self.array[tuple(sl)])
        if self.signed and block.size and block.min() < 0:
            neg = np.argwhere(block < 0)[0]
            pos = [int(neg[perm[d]]) + lo[d] for d in range(3)]
            raise IngestError(
                f"{self.path}: negative label {int(block[tuple(neg)])} at voxel (x, y, z) = "
                f"{tuple(pos)}; labels must be >= 0 (0 is background). Rewrite the volume "
                "with non-negative labels (e.g. as an unsigned integer type).",
                voxel=pos,
            )
        return block.transpose(perm)


# -- metadata ----------------------------------------------------------------


def _load_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IngestError(
            f"{p} is garbled: {e}. It must be valid JSON holding the OME-Zarr metadata; "
            "rewrite it with an OME-Zarr writer (e.g. ome-zarr-py)."
        ) from e


def _key(obj: Any, key: str, where: str, path: Path, kind: type | tuple[type, ...]) -> Any:
    """``obj[key]`` checked for presence and type, else an IngestError naming ``where.key``."""
    if not isinstance(obj, dict) or key not in obj:
        raise IngestError(
            f"{path}: the OME-Zarr metadata lacks the key '{where}{key}'. "
            "See docs/input_format.md for what segmentation.zarr must hold.",
            missing_key=f"{where}{key}",
        )
    v = obj[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise IngestError(
            f"{path}: '{where}{key}' must be a {names}, got {type(v).__name__} {v!r:.80}.",
            bad_key=f"{where}{key}",
        )
    return v


def _read_multiscales(path: Path) -> tuple[list[Any], str, int, Path]:
    """``(multiscales, version, zarr_format, metadata file)`` of an OME-Zarr group."""
    if not path.exists():
        raise IngestError(
            f"no OME-Zarr volume at {path}; the source must hold the supervoxel label volume "
            "as segmentation.zarr (NGFF 0.4 or 0.5), see docs/input_format.md."
        )
    if not path.is_dir():
        raise IngestError(f"{path} is a file, not an OME-Zarr directory (a Zarr group).")
    v3 = path / "zarr.json"
    v2 = path / ".zattrs"
    if v3.exists():
        meta = _load_json(v3)
        if not isinstance(meta, dict):
            raise IngestError(f"{v3} is garbled: it must hold a JSON object.")
        if meta.get("node_type") == "array":
            raise IngestError(
                f"{path} is a bare Zarr array; an OME-Zarr multiscale group is needed "
                "(a group whose zarr.json has attributes.ome.multiscales, the array as dataset '0')."
            )
        attrs = _key(meta, "attributes", "", v3, dict)
        if "ome" in attrs:
            ome = _key(attrs, "ome", "attributes.", v3, dict)
            ms = _key(ome, "multiscales", "attributes.ome.", v3, list)
            version = str(ome.get("version", "0.5"))
        elif "multiscales" in attrs:  # NGFF 0.4 attributes on a Zarr v3 group: tolerated
            ms = _key(attrs, "multiscales", "attributes.", v3, list)
            version = str(ms[0].get("version", "?")) if ms and isinstance(ms[0], dict) else "?"
        else:
            _key(attrs, "ome", "attributes.", v3, dict)  # raises, naming the missing key
            raise AssertionError  # pragma: no cover
        return ms, version, 3, v3
    if v2.exists():
        attrs = _load_json(v2)
        ms = _key(attrs, "multiscales", "", v2, list)
        version = str(ms[0].get("version", "?")) if ms and isinstance(ms[0], dict) else "?"
        return ms, version, 2, v2
    if (path / ".zarray").exists():
        raise IngestError(
            f"{path} is a bare Zarr v2 array; an OME-Zarr multiscale group is needed "
            "(.zattrs with multiscales, the array as dataset '0')."
        )
    raise IngestError(
        f"{path} has no OME-Zarr metadata: neither zarr.json (NGFF 0.5, Zarr v3) nor .zattrs "
        "(NGFF 0.4, Zarr v2) was found."
    )


def _transforms(
    obj: dict, where: str, path: Path, required: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(scale, translation)`` of a ``coordinateTransformations`` list (either may be None)."""
    if "coordinateTransformations" not in obj and not required:
        return None, None
    cts = _key(obj, "coordinateTransformations", where, path, list)
    scale = translation = None
    for i, ct in enumerate(cts):
        w = f"{where}coordinateTransformations[{i}]."
        kind = _key(ct, "type", w, path, str)
        if kind == "identity":
            continue
        if kind not in ("scale", "translation"):
            raise IngestError(
                f"{path}: '{w}type' is {kind!r}; only 'scale' and 'translation' are supported."
            )
        if kind not in ct and "path" in ct:
            raise IngestError(
                f"{path}: '{w}' gives the {kind} by a 'path'; write it inline as a list of 3 numbers."
            )
        vals = _key(ct, kind, w, path, list)
        try:
            arr = np.asarray(vals, dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.zeros(0)
        if arr.shape != (3,) or not np.all(np.isfinite(arr)):
            raise IngestError(
                f"{path}: '{w}{kind}' must be 3 finite numbers (one per axis), got {vals!r:.80}."
            )
        if kind == "scale":
            if np.any(arr <= 0):
                raise IngestError(f"{path}: '{w}scale' must be positive, got {vals}.")
            scale = arr
        else:
            translation = arr
    if required and scale is None:
        raise IngestError(
            f"{path}: '{where}coordinateTransformations' has no 'scale' transform; add "
            '{"type": "scale", "scale": [..]} giving the voxel size in the axis unit.',
            missing_key=f"{where}coordinateTransformations[].scale",
        )
    return scale, translation


def _open_array(path: Path, dataset_path: str) -> Any:
    import zarr

    try:
        return zarr.open_array(store=str(path / dataset_path), mode="r")
    except Exception as e:  # zarr raises a variety of errors for missing/garbled arrays
        raise IngestError(
            f"{path}: cannot open datasets[0] (path '{dataset_path}') as a Zarr array: {e}"
        ) from e


def open_ngff(path: str | Path) -> NgffVolume:
    """Open the finest scale of an OME-Zarr label volume and validate its metadata.

    Parameters
    ----------
    path : str or Path
        The OME-Zarr group directory (e.g. ``SOURCE/segmentation.zarr``).

    Returns
    -------
    NgffVolume

    Raises
    ------
    IngestError
        Missing or garbled metadata (naming the key), axes other than exactly the
        three space axes x, y, z, an unsupported unit, a missing ``scale``, a
        translation that is not a whole number of voxels, a non-integer dtype, or an
        array whose dimensionality does not match the axes.
    """
    path = Path(path)
    ms_list, version, zarr_format, meta_file = _read_multiscales(path)
    if not ms_list:
        raise IngestError(f"{meta_file}: 'multiscales' is empty; it must describe one image.")
    ms = ms_list[0]
    if not isinstance(ms, dict):
        raise IngestError(f"{meta_file}: 'multiscales[0]' must be a JSON object.")
    w = "multiscales[0]."
    axes_meta = _key(ms, "axes", w, meta_file, list)
    names: list[str] = []
    units: list[float] = []
    for i, ax in enumerate(axes_meta):
        if isinstance(ax, str):
            raise IngestError(
                f"{meta_file}: '{w}axes[{i}]' is the bare name {ax!r}; NGFF 0.4+ needs "
                f'{{"name": "{ax}", "type": "space", "unit": "nanometer"}}.'
            )
        name = _key(ax, "name", f"{w}axes[{i}].", meta_file, str)
        kind = ax.get("type", "space")
        if kind != "space" or name.lower() not in _SPACE:
            raise IngestError(
                f"{meta_file}: axis {name!r} (type {kind!r}) is not supported; the volume must "
                "have exactly three space axes named x, y, z (any order) and no channel or "
                "time axis. Drop the extra axis when writing the volume.",
                axes=[a.get("name") if isinstance(a, dict) else a for a in axes_meta],
            )
        unit = _key(ax, "unit", f"{w}axes[{i}].", meta_file, str)
        if unit.lower() not in UNIT_TO_NM:
            raise IngestError(
                f"{meta_file}: axis {name!r} has unit {unit!r}; use 'nanometer' "
                "(also accepted: 'micrometer', 'angstrom').",
                unit=unit,
            )
        names.append(name.lower())
        units.append(UNIT_TO_NM[unit.lower()])
    if sorted(names) != sorted(_SPACE):
        raise IngestError(
            f"{meta_file}: '{w}axes' are {names}; exactly three space axes named x, y, z "
            "(in any order, each once) are required.",
            axes=names,
        )
    datasets = _key(ms, "datasets", w, meta_file, list)
    if not datasets:
        raise IngestError(f"{meta_file}: '{w}datasets' is empty; it must list the scales.")
    d0 = datasets[0]
    dw = f"{w}datasets[0]."
    dpath = _key(d0, "path", dw, meta_file, str)
    scale, translation = _transforms(d0, dw, meta_file, required=True)
    gscale, gtranslation = _transforms(ms, w, meta_file, required=False)
    assert scale is not None
    if gscale is not None:
        # physical = gscale * (scale * index + translation) + gtranslation
        if translation is not None:
            translation = translation * gscale
        scale = scale * gscale
    if gtranslation is not None:
        translation = gtranslation if translation is None else translation + gtranslation
    offset = np.zeros(3)
    if translation is not None:
        offset = translation / scale
        if not np.allclose(offset, np.round(offset), rtol=0, atol=1e-6):
            raise IngestError(
                f"{meta_file}: the translation {translation.tolist()} is not a whole number "
                f"of voxels (voxel size {scale.tolist()}); shift it to a voxel boundary.",
                translation=translation.tolist(),
            )
    arr = _open_array(path, dpath)
    if arr.ndim != 3:
        raise IngestError(
            f"{path / dpath}: the array has {arr.ndim} dimensions but the metadata names 3 axes "
            f"{names}; store a 3-D label volume."
        )
    dtype = np.dtype(arr.dtype)
    if dtype.kind not in "iu":
        what = "floating-point" if dtype.kind == "f" else f"non-integer ({dtype})"
        raise IngestError(
            f"{path / dpath}: {what} labels ({dtype}) are refused; labels must be an integer "
            "type (uint8-uint64, or int8-int64 without negative values). Convert the volume, "
            "e.g. with arr.astype('uint64') after checking every value is a whole number.",
            dtype=str(dtype),
        )
    perm = tuple(names.index(a) for a in _SPACE)
    chunks = tuple(int(arr.chunks[p]) for p in perm) if arr.chunks else tuple(arr.shape)
    return NgffVolume(
        path=path,
        version=version,
        zarr_format=zarr_format,
        dataset_path=dpath,
        axes=tuple(names),
        shape=tuple(int(arr.shape[p]) for p in perm),  # type: ignore[arg-type]
        resolution=tuple(float(scale[p] * units[p]) for p in perm),  # type: ignore[arg-type]
        dtype=dtype,
        chunks=chunks,  # type: ignore[arg-type]
        voxel_offset=tuple(int(round(offset[p])) for p in perm),  # type: ignore[arg-type]
        _array=arr,
    )


def write_ngff_attrs(
    path: str | Path,
    *,
    axes: tuple[str, str, str] = ("z", "y", "x"),
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
    unit: str = "nanometer",
    zarr_format: int = 3,
    dataset_path: str = "0",
    translation: tuple[float, float, float] | None = None,
) -> None:
    """Write the OME-Zarr multiscale metadata for a single-scale label volume.

    The array itself must already be (or later be) written at ``path/dataset_path``.
    ``axes`` and ``scale`` are in the stored array's axis order. ``zarr_format=3``
    writes NGFF 0.5 (``zarr.json`` ``attributes.ome``), ``2`` writes NGFF 0.4
    (``.zgroup`` + ``.zattrs``).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [float(s) for s in scale]}]
    if translation is not None:
        transforms.append({"type": "translation", "translation": [float(t) for t in translation]})
    ms: dict[str, Any] = {
        "name": path.stem,
        "axes": [{"name": a, "type": "space", "unit": unit} for a in axes],
        "datasets": [{"path": dataset_path, "coordinateTransformations": transforms}],
    }
    if zarr_format == 3:
        meta = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {"ome": {"version": "0.5", "multiscales": [ms]}},
        }
        (path / "zarr.json").write_text(json.dumps(meta, indent=2))
    elif zarr_format == 2:
        ms = {"version": "0.4", **ms}
        (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (path / ".zattrs").write_text(json.dumps({"multiscales": [ms]}, indent=2))
    else:
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format}")
