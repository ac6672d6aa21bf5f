"""Vector outputs in every format: round trips, Shapefile names and parts, overwriting, failures, export."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from pyproj import CRS
from shapely.geometry import MultiPolygon, Point, Polygon

from think2seg.errors import InputError, OutputError, OutputExistsError
from think2seg.output import formats, shapefile
from think2seg.output.formats import VECTOR_FORMATS, check_vector_output, export_layer, write_vector
from think2seg.output.shapefile import SHAPEFILE_PARTS, shapefile_field_names

EXTENSIONS = tuple(VECTOR_FORMATS)
SINGLE_LAYER = tuple(ext for ext, form in VECTOR_FORMATS.items() if not form.multi_layer)
CREATED = pd.Timestamp("2024-05-01T12:34:56.789Z")
X0, Y0 = 500_000.3, 5_000_000.7  # pixel corners of a 0.3 m grid: not exactly representable in binary


def segments_frame(count: int = 5, *, crs: object = "EPSG:32633", question: str = "where are the ponds? (é)"):
    """A frame like the ``segments`` layer: polygons (one with a hole) in EPSG:32633."""
    polygons = [shapely.box(X0 + 3.3 * k, Y0 + 0.3 * k, X0 + 3.3 * k + 2.1, Y0 + 0.3 * k + 1.2) for k in range(count)]
    if count:
        hole = [(X0 + 0.3, Y0 + 0.3), (X0 + 0.6, Y0 + 0.3), (X0 + 0.6, Y0 + 0.9), (X0 + 0.3, Y0 + 0.3)]
        polygons[0] = Polygon(polygons[0].exterior.coords, [hole])
    columns = {
        "run_id": ["run-1"] * count,
        "question": [question] * count,
        "status": ["ok"] * count,
        "model": ["tiny-lvlm"] * count,
        "segmenter": ["box-segmenter"] * count,
        "source": ["/data/scene.tif"] * count,
        "created_at": pd.Series([CREATED] * count, dtype="datetime64[ms, UTC]"),
        "area_m2": [2.52 - 0.18 * (k == 0) for k in range(count)],
        "score": [0.9 - 0.1 * k for k in range(count)],
        "class": ["pond" if k % 2 else "lake" for k in range(count)],
    }
    return gpd.GeoDataFrame(columns, geometry=polygons, crs=crs)


def other_layers(segments: gpd.GeoDataFrame) -> dict[str, pd.DataFrame]:
    boxes = segments[["run_id", "score"]].set_geometry(segments.envelope)
    points = gpd.GeoDataFrame({"run_id": ["run-1"]}, geometry=[Point(X0, Y0)], crs=segments.crs)
    runs = pd.DataFrame({"run_id": ["run-1"], "reasoning": ["Ponds."], "polygon_count": [len(segments)]})
    return {"prompt_boxes": boxes, "prompt_points": points, "runs": runs}


def read_back(path: Path) -> gpd.GeoDataFrame:
    if path.suffix == ".parquet":
        return gpd.read_parquet(path)
    return pyogrio.read_dataframe(path, layer="segments" if path.suffix == ".gpkg" else None)


def assert_same_segments(read: gpd.GeoDataFrame, expected: gpd.GeoDataFrame, *, shapefile: bool = False) -> None:
    """Same CRS, geometries (any ring order and orientation) and values; any feature order."""
    assert read.crs is not None and read.crs.equals(expected.crs, ignore_axis_order=True)
    read = read.sort_values("score", ascending=False, ignore_index=True)
    expected = expected.sort_values("score", ascending=False, ignore_index=True)
    assert len(read) == len(expected)
    same = shapely.equals_exact(shapely.normalize(read.geometry.values), shapely.normalize(expected.geometry.values), 0)
    assert same.all()
    for name in ("run_id", "question", "status", "model", "segmenter", "source", "class"):
        assert read[name].tolist() == expected[name].tolist(), name
    np.testing.assert_array_equal(read["area_m2"].to_numpy(float), expected["area_m2"].to_numpy(float))
    np.testing.assert_array_equal(read["score"].to_numpy(float), expected["score"].to_numpy(float))
    if shapefile:
        assert read["created_at"].tolist() == ["2024-05-01T12:34:56.789+00:00"] * len(read)
        assert (pd.to_datetime(read["created_at"]) == CREATED).all()
    else:
        assert str(read["created_at"].dtype) == "datetime64[ms, UTC]"
        assert (read["created_at"] == expected["created_at"]).all()


def read_info_type(path: Path) -> str:
    if path.suffix == ".parquet":
        return json.loads(pq.read_schema(path).metadata[b"geo"])["columns"]["geometry"]["geometry_types"][0]
    if path.suffix == ".geojson":  # declares no type: GDAL reads it from the features
        return pyogrio.read_info(path)["geometry_type"]
    return pyogrio.read_info(path, layer="segments" if path.suffix == ".gpkg" else None)["geometry_type"]


def leftovers(folder: Path, keep: set[str] = frozenset()) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name not in keep)


# --- round trips ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_each_format_round_trips_segments(tmp_path, ext):
    segments = segments_frame()
    path = tmp_path / f"out{ext}"
    write_vector({"segments": segments, **other_layers(segments)}, path)
    assert_same_segments(read_back(path), segments, shapefile=ext == ".shp")
    assert leftovers(tmp_path) == sorted(f"out{part}" for part in (SHAPEFILE_PARTS if ext == ".shp" else (ext,)))


def test_geopackage_gets_every_layer_as_version_1_2(tmp_path):
    segments = segments_frame()
    layers = {"segments": segments, **other_layers(segments)}
    path = tmp_path / "out.gpkg"
    assert write_vector(layers, path) == []
    assert dict(pyogrio.list_layers(path)) == {
        "segments": "Polygon",
        "prompt_boxes": "Polygon",
        "prompt_points": "Point",
        "runs": None,
    }
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 10200
    runs = pyogrio.read_dataframe(path, layer="runs", read_geometry=False)
    assert runs["reasoning"].tolist() == ["Ponds."] and runs["polygon_count"].tolist() == [5]


@pytest.mark.parametrize("ext", SINGLE_LAYER)
def test_single_layer_formats_say_what_they_left_out(tmp_path, ext):
    segments = segments_frame()
    notes = write_vector({"segments": segments, **other_layers(segments)}, tmp_path / f"out{ext}")
    assert notes[0] == "prompt_boxes, prompt_points and runs are kept only in GeoPackage outputs"
    alone = write_vector({"segments": segments}, tmp_path / f"alone{ext}")
    assert not any("GeoPackage" in note for note in alone)


def test_the_main_layer_is_chosen(tmp_path):
    segments = segments_frame()
    notes = write_vector({"segments": segments, **other_layers(segments)}, tmp_path / "p.fgb", main="prompt_points")
    assert notes == ["segments, prompt_boxes and runs are kept only in GeoPackage outputs"]
    assert pyogrio.read_info(tmp_path / "p.fgb")["geometry_type"] == "Point"
    with pytest.raises(InputError, match="has no geometry"):
        write_vector({"segments": segments, **other_layers(segments)}, tmp_path / "r.fgb", main="runs")
    with pytest.raises(InputError, match="no layer 'tiles'"):
        write_vector({"segments": segments}, tmp_path / "t.fgb", main="tiles")
    with pytest.raises(InputError, match="no layers to write"):
        write_vector({}, tmp_path / "t.gpkg")
    write_vector(other_layers(segments), tmp_path / "no-segments.gpkg")  # a GeoPackage takes any layers
    assert [name for name, _ in pyogrio.list_layers(tmp_path / "no-segments.gpkg")] == list(other_layers(segments))
    assert leftovers(tmp_path) == ["no-segments.gpkg", "p.fgb"]


@pytest.mark.parametrize("ext", [".gpkg", ".fgb", ".parquet", ".shp", ".geojson"])
def test_empty_layer_declares_its_geometry_type(tmp_path, ext):
    path = tmp_path / f"out{ext}"
    write_vector({"segments": segments_frame(0)}, path)
    if ext == ".parquet":
        geo = json.loads(pq.read_schema(path).metadata[b"geo"])
        assert geo["columns"]["geometry"]["geometry_types"] == ["Polygon"] and "bbox" not in geo["columns"]["geometry"]
        assert len(gpd.read_parquet(path)) == 0
    elif ext != ".geojson":  # a GeoJSON declares no geometry type
        assert pyogrio.read_info(path)["geometry_type"] == "Polygon" and len(pyogrio.read_dataframe(path)) == 0
    else:
        assert len(pyogrio.read_dataframe(path)) == 0


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_mixed_polygons_and_multipolygons_become_multipolygons(tmp_path, ext):
    segments = segments_frame(3)
    two = MultiPolygon([segments.geometry.iloc[1], shapely.box(X0 - 9, Y0 - 9, X0 - 8, Y0 - 8)])
    segments.loc[1, "geometry"] = two
    write_vector({"segments": segments}, tmp_path / f"out{ext}")
    read = read_back(tmp_path / f"out{ext}").sort_values("score", ascending=False, ignore_index=True)
    assert set(read.geom_type) == {"MultiPolygon"} or ext == ".shp"  # a shapefile does not tell them apart
    assert read_info_type(tmp_path / f"out{ext}") == ("Polygon" if ext == ".shp" else "MultiPolygon")
    assert shapely.equals(read.geometry.values, segments.geometry.values).all()


def test_geoparquet_metadata(tmp_path):
    segments = segments_frame()
    write_vector({"segments": segments}, tmp_path / "out.parquet")
    geo = json.loads(pq.read_schema(tmp_path / "out.parquet").metadata[b"geo"])
    column = geo["columns"]["geometry"]
    assert (geo["version"], geo["primary_column"], column["encoding"]) == ("1.0.0", "geometry", "WKB")
    assert column["geometry_types"] == ["Polygon"] and CRS.from_json_dict(column["crs"]).to_epsg() == 32633
    assert column["bbox"] == pytest.approx(list(segments.total_bounds), abs=0)


# --- GeoJSON and its CRS -------------------------------------------------------------------------------------------


def test_geojson_keeps_the_crs_and_says_so(tmp_path):
    notes = write_vector({"segments": segments_frame()}, tmp_path / "out.geojson")
    collection = json.loads((tmp_path / "out.geojson").read_text())
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert collection["features"][0]["geometry"]["coordinates"][0][0][0] > 180  # metres, not degrees
    assert notes == [
        "out.geojson is in EPSG:32633, the layer's own CRS (named in its crs member), not WGS 84 as RFC 7946 "
        "asks: reproject it explicitly for tools that assume WGS 84"
    ]


def test_geojson_in_wgs84_has_no_note(tmp_path):
    lonlat = gpd.GeoDataFrame({"score": [1.0]}, geometry=[shapely.box(13.1, 52.2, 13.2, 52.3)], crs="EPSG:4326")
    assert write_vector({"segments": lonlat}, tmp_path / "out.geojson") == []
    assert pyogrio.read_dataframe(tmp_path / "out.geojson").geometry.iloc[0].equals(lonlat.geometry.iloc[0])


@pytest.mark.parametrize(
    ("crs", "message"),
    [
        (None, "cannot say that its layer has no CRS"),
        ("+proj=tmerc +lon_0=13.3 +k=0.9996 +x_0=500000 +ellps=GRS80 +units=m", "only a CRS with an authority"),
    ],
)
def test_geojson_refuses_a_crs_readers_would_not_see(tmp_path, crs, message):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OutputError, match=message):
        write_vector({"segments": segments_frame(crs=crs)}, out / "out.geojson")
    assert leftovers(out) == []
    write_vector({"segments": segments_frame(crs=crs)}, out / "out.fgb")  # a format that keeps it
    read = pyogrio.read_dataframe(out / "out.fgb")
    assert read.crs is None if crs is None else read.crs.equals(CRS(crs))


# --- Shapefile -----------------------------------------------------------------------------------------------------


def test_shapefile_field_names_are_short_unique_and_deterministic():
    names = ["window_col_off", "window_col_width", "window_col", "Window_c_1", "größenklasse", "tiles", "TILES"]
    shortened = shapefile_field_names(names)
    assert shortened == {
        "window_col_off": "window_c_2",
        "window_col_width": "window_c_3",
        "window_col": "window_col",
        "Window_c_1": "Window_c_1",
        "größenklasse": "größenkl",
        "tiles": "tiles",
        "TILES": "TILES_1",
    }
    assert all(len(name.encode("utf-8")) <= 10 for name in shortened.values())
    assert len({name.casefold() for name in shortened.values()}) == len(names)
    assert shapefile_field_names(list(names)) == shortened


def test_shapefile_renames_are_written_and_reported(tmp_path):
    segments = segments_frame()
    segments["window_col_off"] = np.arange(5, dtype="int32")
    segments["window_col_width"] = np.full(5, 84, dtype="int32")
    notes = write_vector({"segments": segments}, tmp_path / "out.shp")
    assert "Shapefile field names are at most 10 characters: window_col_off -> window_col, " in notes[0]
    assert notes[0].endswith("window_col_width -> window_c_1")
    assert notes[1] == ("Shapefile has no date-time type: created_at is ISO 8601 text (2024-05-01T12:34:56.789+00:00)")
    read = pyogrio.read_dataframe(tmp_path / "out.shp")
    assert read["window_col"].tolist() == [0, 1, 2, 3, 4] and read["window_c_1"].tolist() == [84] * 5
    assert_same_segments(read, segments, shapefile=True)


def test_shapefile_reports_text_cut_to_254_bytes(tmp_path):
    segments = segments_frame(2, question="é" * 200)
    notes = write_vector({"segments": segments}, tmp_path / "out.shp")
    assert notes[-1] == (
        "Shapefile text is at most 254 bytes: values of question were cut; write a .gpkg to keep them whole"
    )
    assert pyogrio.read_dataframe(tmp_path / "out.shp")["question"].tolist() == ["é" * 127] * 2
    assert not any("254" in note for note in write_vector({"segments": segments_frame()}, tmp_path / "b.shp"))


# --- paths and overwriting -----------------------------------------------------------------------------------------


class Untouchable(Mapping):
    """Layers that fail the test if anything reads them."""

    def __getitem__(self, key: str) -> pd.DataFrame:
        raise AssertionError("the layers were read")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the layers were read")

    def __len__(self) -> int:
        raise AssertionError("the layers were read")


def test_unknown_extension_is_refused_before_any_work(tmp_path):
    expected = "OUT.kml: choose an output ending in .gpkg, .fgb, .geojson, .parquet or .shp"
    with pytest.raises(OutputError, match=expected):
        check_vector_output(tmp_path / "OUT.kml", overwrite=True)
    with pytest.raises(OutputError, match=expected):
        write_vector(Untouchable(), tmp_path / "OUT.kml")
    write_vector({"segments": segments_frame()}, tmp_path / "src.gpkg")
    with pytest.raises(OutputError, match=expected):
        export_layer(tmp_path / "src.gpkg", tmp_path / "OUT.kml")
    assert leftovers(tmp_path) == ["src.gpkg"]


def test_check_accepts_the_known_extensions_in_any_case(tmp_path):
    for ext in EXTENSIONS:
        assert check_vector_output(tmp_path / f"a{ext.upper()}", overwrite=False) == tmp_path / f"a{ext.upper()}"
    with pytest.raises(OutputError, match="the folder .* does not exist"):
        check_vector_output(tmp_path / "missing" / "a.fgb", overwrite=False)


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_existing_output_is_kept_unless_overwrite(tmp_path, ext):
    path = tmp_path / f"out{ext}"
    write_vector({"segments": segments_frame(2)}, path)
    before = {name: (tmp_path / name).read_bytes() for name in leftovers(tmp_path)}
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        check_vector_output(path, overwrite=False)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        write_vector({"segments": segments_frame(4)}, path)
    assert {name: (tmp_path / name).read_bytes() for name in leftovers(tmp_path)} == before
    write_vector({"segments": segments_frame(4)}, path, overwrite=True)
    assert_same_segments(read_back(path), segments_frame(4), shapefile=ext == ".shp")
    assert leftovers(tmp_path) == sorted(before)


@pytest.mark.parametrize("part", [".shx", ".dbf", ".prj", ".cpg", ".qix", ".DBF"])
def test_any_part_of_a_shapefile_is_kept_unless_overwrite(tmp_path, part):
    (tmp_path / f"out{part}").write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=f"out{part} already exists"):
        check_vector_output(tmp_path / "out.shp", overwrite=False)
    with pytest.raises(OutputExistsError, match=f"out{part} already exists"):
        write_vector({"segments": segments_frame()}, tmp_path / "out.shp")
    assert leftovers(tmp_path) == [f"out{part}"] and (tmp_path / f"out{part}").read_bytes() == b"precious"


def test_overwriting_a_shapefile_removes_its_stale_index(tmp_path):
    write_vector({"segments": segments_frame(2)}, tmp_path / "out.shp")
    (tmp_path / "out.qix").write_bytes(b"an index of the old features")
    write_vector({"segments": segments_frame(4)}, tmp_path / "out.shp", overwrite=True)
    assert leftovers(tmp_path) == sorted(f"out{part}" for part in SHAPEFILE_PARTS)
    assert len(pyogrio.read_dataframe(tmp_path / "out.shp")) == 4


# --- failures leave nothing behind ---------------------------------------------------------------------------------


def failing_stream(monkeypatch) -> None:
    """Make every single-layer write fail after its first batch, as a full disk would."""
    real = formats._frame_stream

    def stream(name, frame):
        built = real(name, frame)
        batches = built.reader.read_all().to_batches(max_chunksize=1)

        def failing():
            yield batches[0]
            raise OSError(28, "No space left on device")

        return formats.replace(built, reader=pa.RecordBatchReader.from_batches(built.reader.schema, failing()))

    monkeypatch.setattr(formats, "_frame_stream", stream)


@pytest.mark.parametrize("ext", SINGLE_LAYER)
def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, ext):
    failing_stream(monkeypatch)
    with pytest.raises(OutputError, match="No space left on device.*nothing was written"):
        write_vector({"segments": segments_frame()}, tmp_path / f"out{ext}")
    assert leftovers(tmp_path) == []


def test_a_failure_while_writing_a_geopackage_leaves_nothing(tmp_path, monkeypatch):
    real, written = formats.write_layer, []

    def fail_on_second_layer(frame, path, **options):
        if written:
            raise pyogrio.errors.DataLayerError("disk I/O error")
        real(frame, path, **options)
        written.append(options["layer"])

    monkeypatch.setattr(formats, "write_layer", fail_on_second_layer)
    segments = segments_frame()
    with pytest.raises(OutputError, match="disk I/O error"):
        write_vector({"segments": segments, **other_layers(segments)}, tmp_path / "out.gpkg")
    assert written == ["segments"] and leftovers(tmp_path) == []


def test_a_frame_gdal_cannot_write_leaves_nothing(tmp_path):
    segments = segments_frame(2)
    segments["mixed"] = pd.Series([1, "one"], dtype="object")  # no Arrow type holds both
    with pytest.raises(OutputError, match="write a .gpkg"):
        write_vector({"segments": segments}, tmp_path / "out.fgb")
    assert leftovers(tmp_path) == []


def test_a_failed_move_puts_the_previous_shapefile_back(tmp_path, monkeypatch):
    write_vector({"segments": segments_frame(2)}, tmp_path / "out.shp")
    before = {name: (tmp_path / name).read_bytes() for name in leftovers(tmp_path)}
    real = shapefile.replace_file

    def locked_shp(temporary, target):
        if target == tmp_path / "out.shp":
            raise OutputError(f"cannot replace {target} (Permission denied): close it in other programs")
        real(temporary, target)

    monkeypatch.setattr(shapefile, "replace_file", locked_shp)
    with pytest.raises(OutputError, match="close it in other programs"):
        write_vector({"segments": segments_frame(4)}, tmp_path / "out.shp", overwrite=True)
    assert {name: (tmp_path / name).read_bytes() for name in leftovers(tmp_path)} == before
    assert len(pyogrio.read_dataframe(tmp_path / "out.shp")) == 2


# --- export from a GeoPackage ---------------------------------------------------------------------------------------


@pytest.fixture
def batch_gpkg(tmp_path) -> Path:
    segments = segments_frame()
    path = tmp_path / "run.gpkg"
    write_vector({"segments": segments, **other_layers(segments)}, path)
    return path


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_export_layer_to_each_format_in_batches(tmp_path, monkeypatch, batch_gpkg, ext):
    monkeypatch.setattr(formats, "EXPORT_BATCH_FEATURES", 2)  # 5 features: 3 batches
    monkeypatch.setattr(pyogrio, "read_dataframe", None)  # streamed: the layer is never read whole
    target = tmp_path / "export" / f"segments{ext}"
    target.parent.mkdir()
    notes = export_layer(batch_gpkg, target)
    monkeypatch.undo()
    assert_same_segments(read_back(target), segments_frame(), shapefile=ext == ".shp")
    if ext == ".gpkg":
        assert [name for name, _ in pyogrio.list_layers(target)] == ["segments"] and notes == []
        with closing(sqlite3.connect(target)) as connection:
            assert connection.execute("PRAGMA user_version").fetchone()[0] == 10200
    if ext == ".shp":
        assert notes == ["Shapefile has no date-time type: created_at is ISO 8601 text (2024-05-01T12:34:56.789+00:00)"]
    if ext == ".geojson":
        assert "EPSG:32633" in notes[0]
    assert len(leftovers(target.parent)) == (len(SHAPEFILE_PARTS) if ext == ".shp" else 1)


def test_export_another_layer(tmp_path, batch_gpkg):
    assert export_layer(batch_gpkg, tmp_path / "points.fgb", layer="prompt_points") == []
    points = pyogrio.read_dataframe(tmp_path / "points.fgb")
    assert points.geometry.iloc[0].equals(Point(X0, Y0)) and points.crs.to_epsg() == 32633


def test_export_refuses_what_it_cannot_do(tmp_path, batch_gpkg):
    with pytest.raises(InputError, match="has no layer 'tiles': choose one of segments, prompt_boxes"):
        export_layer(batch_gpkg, tmp_path / "a.fgb", layer="tiles")
    with pytest.raises(InputError, match="does not exist"):
        export_layer(tmp_path / "missing.gpkg", tmp_path / "a.fgb")
    with pytest.raises(InputError, match="runs has no geometry"):
        export_layer(batch_gpkg, tmp_path / "a.fgb", layer="runs")
    with pytest.raises(OutputError, match="is the GeoPackage to export from"):
        export_layer(batch_gpkg, batch_gpkg, overwrite=True)
    with pytest.raises(OutputExistsError):
        export_layer(batch_gpkg, batch_gpkg)
    assert leftovers(tmp_path) == ["run.gpkg"]
    assert len(pyogrio.read_dataframe(batch_gpkg, layer="segments")) == 5
