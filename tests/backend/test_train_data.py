"""Training data from rasters and label polygons: labels, tiling, masks, split, empty ratio, layout."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from PIL import Image
from rasterio.windows import Window
from shapely.geometry import LineString, Point, Polygon, box

from think2seg.batch.grid import TileGrid
from think2seg.classes import ClassQuestions, classes_from_questions, load_classes
from think2seg.errors import InputError, MissingCRSError, OutputExistsError, QuestionError
from think2seg.eval.datasets import load_samples
from think2seg.eval.predict import load
from think2seg.geo.read import RasterSource
from think2seg.train import tiles
from think2seg.train.labels import Labels, class_masks, class_slugs, read_labels
from think2seg.train.split import block_of, grid_windows
from think2seg.train.tiles import DataOptions, prepare_dataset, write_image

from rasters import UTM_TRANSFORM, scene, write_raster

X0, Y0, PX = UTM_TRANSFORM.c, UTM_TRANSFORM.f, UTM_TRANSFORM.a  # 0.5 m pixels, north up
QUESTIONS = ("segment the dump sites", "where are the dumps?")


def pixel_box(col0: float, row0: float, col1: float, row1: float) -> Polygon:
    """A rectangle given in pixel coordinates of UTM_TRANSFORM, as a map polygon (EPSG:32633)."""
    return box(X0 + col0 * PX, Y0 - row1 * PX, X0 + col1 * PX, Y0 - row0 * PX)


def raster(tmp_path: Path, width: int, height: int, *, name: str = "scene.tif", **kwargs: object) -> Path:
    return write_raster(tmp_path / name, scene(height, width), **kwargs)


def gpkg(
    tmp_path: Path,
    geometries: list[object],
    *,
    crs: str | None = "EPSG:32633",
    name: str = "labels.gpkg",
    **fields: list[object],
) -> Path:
    path = tmp_path / name
    gpd.GeoDataFrame(fields, geometry=geometries, crs=crs).to_file(path, driver="GPKG", engine="pyogrio")
    return path


def labels_for(path: Path, questions: tuple[str, ...] = QUESTIONS) -> Labels:
    return read_labels(path, class_field=None, classes=classes_from_questions(questions))


def listing(root: Path) -> list[dict[str, object]]:
    return json.loads((root / "samples.json").read_text(encoding="utf-8"))


def window_set(records: list[dict[str, object]]) -> set[tuple[int, ...]]:
    return {tuple(r["window"]) for r in records}  # type: ignore[arg-type]


def overlaps(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


# --- labels and classes ---------------------------------------------------------------------------


def test_load_classes_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text('dump: "segment the dumps"\n2: ["segment ponds", " where is water? "]\n')
    (tmp_path / "c.json").write_text('{"dump": "segment the dumps", "2": ["segment ponds", "where is water?"]}')
    expected = [
        ClassQuestions("dump", ("segment the dumps",)),
        ClassQuestions("2", ("segment ponds", "where is water?")),
    ]
    assert load_classes(tmp_path / "c.yaml") == expected
    assert load_classes(tmp_path / "c.json") == expected


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("dup.yaml", "Dump: a question\nDump: another question\n", "more than once"),
        ("dup2.yaml", "1: a question\n'1': another question\n", "more than once"),
        ("dup.json", '{"Dump": "a question", "Dump": "another"}', "more than once"),
        ("empty.yaml", "", "must map each class"),
        ("list.yaml", "- a\n- b\n", "must map each class"),
        ("noq.yaml", "dump: []\n", "no question"),
        ("bad.json", "{not json", "not valid JSON"),
        ("bad.txt", "dump: q\n", "must end in"),
        ("num.yaml", "dump: 3\n", "a question or a list"),
    ],
)
def test_load_classes_refuses_bad_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=match):
        load_classes(tmp_path / name)


def test_load_classes_missing_file_and_blank_question(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_classes(tmp_path / "nope.yaml")
    (tmp_path / "blank.yaml").write_text("dump: '   '\n")
    with pytest.raises(QuestionError, match="empty"):
        load_classes(tmp_path / "blank.yaml")


def test_classes_from_questions_and_slugs() -> None:
    assert classes_from_questions(["  a question "]) == [ClassQuestions("", ("a question",))]
    with pytest.raises(InputError, match="at least one question"):
        classes_from_questions([])
    classes = [ClassQuestions(n, ("q",)) for n in ("", "Dump Site", "dump-site", "%%")]
    assert class_slugs(classes) == {"": "target", "Dump Site": "dump-site", "dump-site": "dump-site-2", "%%": "class"}


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_read_labels_bad_inputs(tmp_path: Path) -> None:
    classes = classes_from_questions(QUESTIONS)
    with pytest.raises(InputError, match="does not exist"):
        read_labels(tmp_path / "nope.gpkg", class_field=None, classes=classes)
    (tmp_path / "junk.gpkg").write_text("not a geopackage")
    with pytest.raises(InputError, match="cannot read the labels"):
        read_labels(tmp_path / "junk.gpkg", class_field=None, classes=classes)
    empty = gpkg(tmp_path, [], name="empty.gpkg", kind=[])
    with pytest.raises(InputError, match="no features"):
        read_labels(empty, class_field=None, classes=classes)
    no_crs = gpkg(tmp_path, [pixel_box(0, 0, 4, 4)], crs=None, name="nocrs.gpkg")
    with pytest.raises(InputError, match="no CRS"):
        read_labels(no_crs, class_field=None, classes=classes)
    lines = gpkg(tmp_path, [Point(X0, Y0), LineString([(X0, Y0), (X0 + 5, Y0 - 5)])], name="lines.gpkg")
    with pytest.raises(InputError, match="no polygons"):
        read_labels(lines, class_field=None, classes=classes)


def test_read_labels_class_field(tmp_path: Path) -> None:
    path = gpkg(tmp_path, [pixel_box(0, 0, 4, 4)] * 3, kind=["dump", "pond", None], area=[1.0, 2.0, 3.0])
    dump = [ClassQuestions("dump", ("segment the dumps",))]
    with pytest.raises(InputError, match="no field 'klass'; their fields are: kind, area"):
        read_labels(path, class_field="klass", classes=dump)
    with pytest.raises(InputError, match="no feature .* among the classes .*holds dump, pond"):
        read_labels(path, class_field="kind", classes=[ClassQuestions("river", ("segment the river",))])
    labels = read_labels(path, class_field="kind", classes=dump)
    assert list(labels.frame["class"]) == ["dump"]
    assert labels.notes == [
        "2 label feature(s) left out: their 'kind' is not a class asked about (values pond; 1 without a value)"
    ]
    with pytest.raises(InputError, match="no class field"):
        read_labels(path, class_field=None, classes=dump + [ClassQuestions("pond", ("segment ponds",))])


def test_read_labels_numeric_class_field_matches_text_keys(tmp_path: Path) -> None:
    path = gpkg(tmp_path, [pixel_box(0, 0, 4, 4)] * 2, code=[2.0, 3.0])
    labels = read_labels(path, class_field="code", classes=[ClassQuestions("2", ("segment ponds",))])
    assert list(labels.frame["class"]) == ["2"]


def test_read_labels_drops_points_and_repairs_polygons(tmp_path: Path) -> None:
    bowtie = Polygon([(X0, Y0), (X0 + 10, Y0 - 10), (X0 + 10, Y0), (X0, Y0 - 10)])
    path = gpkg(tmp_path, [pixel_box(0, 0, 4, 4), Point(X0, Y0), bowtie])
    labels = labels_for(path)
    assert len(labels.frame) == 2 and labels.frame.geometry.is_valid.all()
    assert set(labels.frame.geom_type) <= {"Polygon", "MultiPolygon"}
    assert labels.notes == [
        "1 label feature(s) left out: not polygons (1 Point)",
        "1 invalid polygon(s) repaired (shapely make_valid, polygonal parts kept)",
    ]
    assert labels.frame.geometry.iloc[1].area == pytest.approx(50.0)


# --- tiling and masks ------------------------------------------------------------------------------


def test_grid_windows_edge_to_edge_with_shifted_last_tiles() -> None:
    windows = grid_windows(200, 150, 64)
    starts = sorted({(int(w.col_off), int(w.row_off)) for _, _, w in windows})
    assert sorted({c for c, _ in starts}) == [0, 64, 128, 136] and sorted({r for _, r in starts}) == [0, 64, 86]
    assert len(windows) == 12 and all((w.width, w.height) == (64, 64) for _, _, w in windows)
    assert [(r, c) for r, c, _ in windows][:5] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert [(int(w.width), int(w.height)) for _, _, w in grid_windows(50, 40, 64)] == [(50, 40)]
    assert len(grid_windows(128, 64, 64)) == 2
    for width, height in ((200, 150), (2500, 2048), (50, 40)):  # the batch grid without overlap, core aside
        grid = TileGrid(Window(0, 0, width, height), 1024 if width > 1000 else 64, 0)
        assert [(t.row, t.col, t.window) for t in grid] == grid_windows(width, height, grid.tile_size_px)


def test_shifted_last_tile_joins_its_neighbours_block() -> None:
    assert [block_of(i, s, 64, 1) for i, s in enumerate([0, 64, 128, 136])] == [0, 1, 2, 2]
    assert [block_of(i, s, 64, 2) for i, s in enumerate([0, 64, 128, 192, 236])] == [0, 0, 1, 1, 1]
    assert [block_of(i, s, 64, 2) for i, s in enumerate([0, 64, 128, 192, 256])] == [0, 0, 1, 1, 2]


def test_class_masks_follow_the_pixel_centre_rule(tmp_path: Path) -> None:
    path = raster(tmp_path, 128, 128)
    labels = labels_for(gpkg(tmp_path, [pixel_box(20.25, 10.25, 40.25, 30.75)]))
    with RasterSource(path) as source:
        tile = source.read(source.full_window)
    mask = class_masks(tile, labels.frame, labels.classes)[""]
    expected = np.zeros((128, 128), bool)
    expected[10:31, 20:40] = True
    np.testing.assert_array_equal(mask, expected)


def test_class_masks_exclude_nodata(tmp_path: Path) -> None:
    data = scene(64, 64)
    data[:, :, :32] = 0
    path = write_raster(tmp_path / "nd.tif", data, nodata=0)
    labels = labels_for(gpkg(tmp_path, [pixel_box(16, 16, 48, 48)]))
    with RasterSource(path) as source:
        tile = source.read(source.full_window)
    expected = np.zeros((64, 64), bool)
    expected[16:48, 32:48] = True
    np.testing.assert_array_equal(class_masks(tile, labels.frame, labels.classes)[""], expected)


# --- the written dataset ---------------------------------------------------------------------------


def test_dataset_reads_back_with_masks_and_provenance(tmp_path: Path) -> None:
    path = raster(tmp_path, 200, 150)
    square = pixel_box(20.25, 10.25, 40.25, 30.75)
    labels = labels_for(gpkg(tmp_path, [square, pixel_box(150.25, 100.25, 160.25, 110.25)]))
    options = DataOptions(tile_size_px=64, val_fraction=0, empty_ratio=0)
    prepared = prepare_dataset([path], labels, tmp_path / "out", options)
    assert prepared.val_root is None and not (tmp_path / "out" / "val").exists()
    assert "val_fraction is 0: no validation split was written" in prepared.notes
    records = listing(prepared.train_root)
    tiles_with_target = {tuple(r["window"]) for r in records}
    # the second square spans the shifted last column (136..199) and rows 86..149 / 64..127
    assert tiles_with_target == {
        (0, 0, 64, 64),
        (136, 86, 64, 64),
        (136, 64, 64, 64),
        (128, 86, 64, 64),
        (128, 64, 64, 64),
    }
    assert len(records) == 2 * len(tiles_with_target)
    first = records[0]
    assert first["image"] == "images/scene_r000_c000.png" and first["mask"] == "masks/scene_r000_c000_target.png"
    assert first["question"] == QUESTIONS[0] and first["class"] == "" and first["empty"] is False
    assert first["source"] == str(path.absolute()) and first["crs"] == "EPSG:32633" and first["block"] == [0, 0]
    assert first["bounds"] == [X0, Y0 - 64 * PX, X0 + 64 * PX, Y0]
    samples = load_samples("folder", prepared.train_root, "train")
    assert [s.question for s in samples[:2]] == list(QUESTIONS)
    loaded = load(samples[0])
    with RasterSource(path) as source:
        tile = source.read(source.full_window)
    mask = class_masks(tile, labels.frame, labels.classes)[""]
    np.testing.assert_array_equal(loaded.target, mask[:64, :64])
    np.testing.assert_array_equal(loaded.image, tile.pixels[:64, :64])
    assert loaded.valid.all()
    for sample, record in zip(samples, records):
        col, row, width, height = record["window"]
        np.testing.assert_array_equal(load(sample).target, mask[row : row + height, col : col + width])
    counts = prepared.counts
    assert counts["tiles"] == 12 and counts["tiles_read"] == 12 and counts["tiles_skipped_nodata"] == 0
    assert counts["samples"] == {"train": 10, "val": 0} and counts["empty_dropped"]["train"] == 14
    assert counts["class_samples"]["train"] == {"": 10}
    assert json.loads(json.dumps(prepared.to_json()))["counts"] == counts


def test_rgba_png_round_trips_valid(tmp_path: Path) -> None:
    pixels = scene(20, 30).transpose(1, 2, 0).copy()
    valid = np.ones((20, 30), bool)
    valid[5:9, 3:17] = False
    pixels[~valid] = 0
    write_image(tmp_path / "rgba.png", pixels, valid)
    write_image(tmp_path / "rgb.png", pixels, np.ones_like(valid))
    for name, expected in (("rgba.png", valid), ("rgb.png", np.ones_like(valid))):
        with RasterSource(tmp_path / name, pixel_coords=True) as source:
            tile = source.read(source.full_window)
            assert source.dtypes == (("uint8",) * (4 if name == "rgba.png" else 3))
        np.testing.assert_array_equal(tile.valid, expected)
        np.testing.assert_array_equal(tile.pixels, pixels)


def test_nodata_tiles_are_skipped_and_partial_ones_written_rgba(tmp_path: Path) -> None:
    data = scene(128, 128)
    data[:, :, 64:] = 0
    data[:, 64:, 32:64] = 0  # tile (1, 0) is a quarter nodata
    path = write_raster(tmp_path / "nd.tif", data, nodata=0)
    labels = labels_for(gpkg(tmp_path, [pixel_box(10, 70, 50, 120)]), questions=("segment the dumps",))
    prepared = prepare_dataset([path], labels, tmp_path / "out", DataOptions(tile_size_px=64, val_fraction=0))
    assert prepared.counts["tiles_read"] == 4 and prepared.counts["tiles_skipped_nodata"] == 2
    records = listing(prepared.train_root)
    # the empty tile (0, 0) is kept: empty_ratio 0.5 of 1 sample with a target rounds up to 1
    assert [(r["window"], r["empty"]) for r in records] == [([0, 0, 64, 64], True), ([0, 64, 64, 64], False)]
    assert Image.open(prepared.train_root / "images" / "nd_r000_c000.png").mode == "RGB"
    assert Image.open(prepared.train_root / "images" / "nd_r001_c000.png").mode == "RGBA"
    loaded = load(load_samples("folder", prepared.train_root, "train")[1])
    assert loaded.valid[:, :32].all() and not loaded.valid[:, 32:].any()
    assert not loaded.target[:, 32:].any() and loaded.target[6:56, 10:32].all() and loaded.target.sum() == 50 * 22


@pytest.mark.parametrize(("ratio", "kept"), [(0.0, 0), (0.5, 1), (1.0, 2)])
def test_empty_ratio(tmp_path: Path, ratio: float, kept: int) -> None:
    path = raster(tmp_path, 256, 256)
    labels = labels_for(gpkg(tmp_path, [pixel_box(10, 10, 30, 30)]))
    options = DataOptions(tile_size_px=64, val_fraction=0, empty_ratio=ratio)
    prepared = prepare_dataset([path], labels, tmp_path / "out", options)
    records = listing(prepared.train_root)
    assert sum(not r["empty"] for r in records) == 2
    assert sum(r["empty"] for r in records) == kept
    assert prepared.counts["empty_kept"]["train"] == kept
    assert prepared.counts["empty_dropped"]["train"] == 30 - kept
    samples = load_samples("folder", prepared.train_root, "train")
    for sample, record in zip(samples, records):
        assert load(sample).target.any() == (not record["empty"])
    images = {p.name for p in (prepared.train_root / "images").iterdir()}
    assert images == {Path(str(r["image"])).name for r in records}
    masks = {p.name for p in (prepared.train_root / "masks").iterdir()}
    assert masks == {Path(str(r["mask"])).name for r in records}


def test_spatial_split_keeps_pixels_apart_and_follows_the_seed(tmp_path: Path) -> None:
    path = raster(tmp_path, 300, 300)  # 5 x 5 tiles of 64, the last row and column shifted back to 236
    squares = [
        pixel_box(c + 5.25, r + 5.25, c + 20.25, r + 20.25) for r in range(0, 300, 60) for c in range(0, 300, 60)
    ]
    labels = labels_for(gpkg(tmp_path, squares), questions=("segment the dumps",))
    options = DataOptions(tile_size_px=64, block_tiles=2, val_fraction=0.5, empty_ratio=1)
    first = prepare_dataset([path], labels, tmp_path / "a", options)
    again = prepare_dataset([path], labels, tmp_path / "b", options)
    train, val = listing(first.train_root), listing(first.val_root)  # type: ignore[arg-type]
    assert train and val and first.counts["blocks"] == {"train": 2, "val": 2}
    assert all(not overlaps(a, b) for a in window_set(train) for b in window_set(val))
    assert {tuple(r["block"]) for r in train}.isdisjoint({tuple(r["block"]) for r in val})
    assert (train, val) == (listing(again.train_root), listing(again.val_root))  # type: ignore[arg-type]
    splits = set()
    for seed in range(6):
        other = prepare_dataset([path], labels, tmp_path / f"s{seed}", replace(options, seed=seed))
        splits.add(frozenset(window_set(listing(other.val_root))))  # type: ignore[arg-type]
    assert len(splits) > 1
    assert len(load_samples("folder", first.val_root, "val")) == len(val)  # type: ignore[arg-type]


def test_block_tiles_one_still_keeps_pixels_apart(tmp_path: Path) -> None:
    path = raster(tmp_path, 200, 64)  # columns at 0, 64, 128 and 136: the last two overlap
    squares = [pixel_box(c + 2.25, 2.25, c + 60.25, 60.25) for c in (0, 64, 128)] + [pixel_box(180, 10, 190, 20)]
    labels = labels_for(gpkg(tmp_path, squares), questions=("segment the dumps",))
    for seed in range(8):
        options = DataOptions(tile_size_px=64, block_tiles=1, val_fraction=0.5, seed=seed)
        prepared = prepare_dataset([path], labels, tmp_path / f"out{seed}", options)
        train, val = window_set(listing(prepared.train_root)), window_set(listing(prepared.val_root))  # type: ignore[arg-type]
        assert all(not overlaps(a, b) for a in train for b in val)
        assert ((128, 0, 64, 64) in train) == ((136, 0, 64, 64) in train)


def test_labels_in_another_crs_are_reprojected_with_a_note(tmp_path: Path) -> None:
    path = raster(tmp_path, 128, 128)
    square = pixel_box(20.25, 10.25, 40.25, 30.75)
    native = labels_for(gpkg(tmp_path, [square], name="utm.gpkg"))
    geographic = gpd.GeoSeries([square], crs="EPSG:32633").to_crs("EPSG:4326")
    moved = labels_for(gpkg(tmp_path, list(geographic), crs="EPSG:4326", name="wgs.gpkg"))
    frame, note = moved.in_crs("EPSG:32633", raster="scene.tif")
    assert note == "labels reprojected from EPSG:4326 to EPSG:32633 for raster scene.tif"
    assert native.in_crs("EPSG:32633")[1] is None
    options = DataOptions(tile_size_px=64, val_fraction=0, empty_ratio=0)
    a = prepare_dataset([path], native, tmp_path / "a", options)
    b = prepare_dataset([path], moved, tmp_path / "b", options)
    assert "labels reprojected from EPSG:4326 to EPSG:32633 for raster scene.tif" in b.notes
    assert not any("reprojected" in n for n in a.notes)
    for x, y in zip(load_samples("folder", a.train_root, "train"), load_samples("folder", b.train_root, "train")):
        np.testing.assert_array_equal(load(x).target, load(y).target)
    assert load(load_samples("folder", b.train_root, "train")[0]).target.sum() == 21 * 20


def test_classes_get_their_own_masks(tmp_path: Path) -> None:
    path = raster(tmp_path, 64, 64)
    labels_path = gpkg(
        tmp_path, [pixel_box(2.25, 2.25, 10.25, 10.25), pixel_box(30.25, 30.25, 40.25, 40.25)], kind=["dump", "pond"]
    )
    classes = [
        ClassQuestions("dump", ("segment the dumps",)),
        ClassQuestions("pond", ("segment ponds", "where is water?")),
    ]
    labels = read_labels(labels_path, class_field="kind", classes=classes)
    options = DataOptions(tile_size_px=64, val_fraction=0)
    prepared = prepare_dataset([path], labels, tmp_path / "out", options, progress=True)
    records = listing(prepared.train_root)
    assert [(r["class"], r["mask"]) for r in records] == [
        ("dump", "masks/scene_r000_c000_dump.png"),
        ("pond", "masks/scene_r000_c000_pond.png"),
        ("pond", "masks/scene_r000_c000_pond.png"),
    ]
    samples = load_samples("folder", prepared.train_root, "train")
    assert [s.class_name for s in samples] == ["dump", "pond", "pond"]
    assert load(samples[0]).target.sum() == 64 and load(samples[1]).target.sum() == 100
    assert prepared.counts["class_samples"]["train"] == {"dump": 1, "pond": 2}


def test_two_rasters_with_one_stem(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = raster(tmp_path / "a", 64, 64), raster(tmp_path / "b", 64, 64)
    labels = labels_for(gpkg(tmp_path, [pixel_box(2.25, 2.25, 10.25, 10.25)]), questions=("segment the dumps",))
    prepared = prepare_dataset([first, second], labels, tmp_path / "out", DataOptions(tile_size_px=64, val_fraction=0))
    assert [r["image"] for r in listing(prepared.train_root)] == [
        "images/scene_r000_c000.png",
        "images/scene-2_r000_c000.png",
    ]
    far = raster(tmp_path, 64, 64, name="far.tif", transform=Affine(0.5, 0, 600000.0, 0, -0.5, 5000000.0))
    with_far = prepare_dataset([first, far], labels, tmp_path / "far", DataOptions(tile_size_px=64, val_fraction=0))
    assert "no label polygon reaches far.tif: its tiles give only empty samples" in with_far.notes
    assert with_far.counts["samples"]["train"] == 2  # far's empty tile is kept (empty_ratio 0.5 of 1)
    with pytest.raises(InputError, match="more than once"):
        prepare_dataset([first, first], labels, tmp_path / "again", DataOptions(tile_size_px=64, val_fraction=0))


# --- refusals ---------------------------------------------------------------------------------------


def test_labels_that_miss_the_rasters(tmp_path: Path) -> None:
    path = raster(tmp_path, 128, 128)
    labels = labels_for(gpkg(tmp_path, [box(600000, 5000000, 600010, 5000010)]))
    with pytest.raises(
        InputError,
        match=r"the labels miss the rasters: scene.tif covers \[512000.0, 5261936.0, 512064.0, 5262000.0\], the labels \[600000.0, 5000000.0, 600010.0, 5000010.0\] \(in EPSG:32633\)",
    ):
        prepare_dataset([path], labels, tmp_path / "out", DataOptions(tile_size_px=64, val_fraction=0))
    assert not (tmp_path / "out").exists()


def test_labels_in_nodata_only_give_no_target(tmp_path: Path) -> None:
    data = scene(64, 128)
    data[:, :, 64:] = 0
    path = write_raster(tmp_path / "nd.tif", data, nodata=0)
    labels = labels_for(gpkg(tmp_path, [pixel_box(70, 10, 120, 50)]))
    with pytest.raises(InputError, match="no label polygon falls inside the tiles of nd.tif"):
        prepare_dataset([path], labels, tmp_path / "out", DataOptions(tile_size_px=64, val_fraction=0))
    assert not (tmp_path / "out").exists() and list(tmp_path.glob(".out.*")) == []


def test_too_few_blocks_for_validation(tmp_path: Path) -> None:
    path = raster(tmp_path, 64, 64)
    labels = labels_for(gpkg(tmp_path, [pixel_box(2, 2, 10, 10)]))
    with pytest.raises(InputError, match="1 split block, too few .*--block-tiles.*--val-fraction 0"):
        prepare_dataset([path], labels, tmp_path / "out", DataOptions(tile_size_px=64, val_fraction=0.2))
    wide = raster(tmp_path, 256, 64, name="wide.tif")  # 4 blocks of one tile, labels in one
    with pytest.raises(InputError, match="fall in 1 of 4 split blocks"):
        prepare_dataset([wide], labels, tmp_path / "out", DataOptions(tile_size_px=64, block_tiles=1))
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused(tmp_path: Path) -> None:
    path = raster(tmp_path, 64, 64)
    labels = labels_for(gpkg(tmp_path, [pixel_box(2, 2, 10, 10)]))
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputExistsError, match="already exists"):
        prepare_dataset([path], labels, tmp_path / "out", DataOptions(tile_size_px=64, val_fraction=0))


def test_a_failure_midway_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = raster(tmp_path, 256, 256)
    labels = labels_for(gpkg(tmp_path, [pixel_box(10, 10, 200, 200)]))
    written: list[Path] = []

    def failing(out: Path, mask: np.ndarray) -> None:
        if len(written) == 3:
            raise OSError("disk full")
        written.append(out)
        out.write_bytes(b"")

    monkeypatch.setattr(tiles, "write_mask", failing)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset([path], labels, tmp_path / "out", DataOptions(tile_size_px=64, val_fraction=0))
    assert len(written) == 3 and not (tmp_path / "out").exists() and list(tmp_path.glob(".out.*")) == []


def test_raster_without_crs_is_refused(tmp_path: Path) -> None:
    path = raster(tmp_path, 64, 64, crs=None, transform=Affine(1, 0, 0, 0, 1, 0))
    labels = labels_for(gpkg(tmp_path, [pixel_box(2, 2, 10, 10)]))
    with pytest.raises(MissingCRSError, match="no CRS"):
        prepare_dataset([path], labels, tmp_path / "out", DataOptions(tile_size_px=64, val_fraction=0))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("tile_size_px", 32, "tile_size_px must be"),
        ("empty_ratio", -1, "empty_ratio must be"),
        ("val_fraction", 1.0, "val_fraction must be"),
        ("block_tiles", 0, "block_tiles must be"),
        ("min_valid_fraction", 1.5, "min_valid_fraction must be"),
        ("seed", 1.5, "seed must be"),
    ],
)
def test_data_options_are_checked(field: str, value: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        DataOptions(**{field: value})  # type: ignore[arg-type]
