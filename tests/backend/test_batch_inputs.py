"""The rasters of a batch run: expanding files, folders, globs and list files; checking them; their CRSs."""

from __future__ import annotations

from pathlib import Path

import pytest
from rasterio.crs import CRS

from think2seg.batch.inputs import RasterInfo, check_one_crs, check_rasters, crs_groups, expand_rasters
from think2seg.errors import InputError, MissingCRSError, RasterError, RasterNotFoundError

from rasters import scene, write_raster


def _raster(path: Path, crs: str | None = "EPSG:32633") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_raster(path, scene(8, 8), crs=crs)


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


def _info(name: str, crs: str | CRS | None) -> RasterInfo:
    return RasterInfo(Path("/data") / name, CRS.from_user_input(crs) if crs is not None else None, 8, 8)


# --- expand_rasters


def test_paths_keep_their_order_and_lose_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "b.tif", tmp_path / "a.tif")
    got = expand_rasters(["b.tif", tmp_path / "a.tif", "./b.tif", "sub/../a.tif", "missing.tif"])
    assert got == [tmp_path / "b.tif", tmp_path / "a.tif", tmp_path / "missing.tif"]
    assert all(path.is_absolute() for path in got)


def test_a_quoted_glob_is_expanded_sorted_without_sidecars(tmp_path: Path) -> None:
    tiles = tmp_path / "tiles"
    _touch(tiles / "b.tif", tiles / "a.tif", tiles / "a.tif.aux.xml", tiles / "a.tif.ovr", tiles / "b.tif.msk")
    _touch(tiles / "deep" / "c.tif")
    assert expand_rasters([str(tiles / "*")]) == [tiles / "a.tif", tiles / "b.tif"]  # the folder "deep" is no raster
    assert expand_rasters([str(tiles / "**" / "*.tif")]) == [tiles / "a.tif", tiles / "b.tif", tiles / "deep" / "c.tif"]


def test_a_file_whose_name_looks_like_a_glob_is_a_file(tmp_path: Path) -> None:
    _touch(tmp_path / "scene[1].tif")
    assert expand_rasters([str(tmp_path / "scene[1].tif")]) == [tmp_path / "scene[1].tif"]


def test_a_glob_matching_nothing_says_to_check_and_quote_it(tmp_path: Path) -> None:
    pattern = str(tmp_path / "tiles" / "*.tif")
    with pytest.raises(InputError, match=r"no raster matches '.*tiles/\*\.tif': check the pattern \(quote it"):
        expand_rasters([pattern])


def test_a_folder_gives_its_rasters_sorted_and_nothing_else(tmp_path: Path) -> None:
    folder = tmp_path / "scenes"
    _touch(folder / "b.tif", folder / "a.TIF", folder / "c.vrt", folder / "a.TIF.aux.xml", folder / "b.tif.ovr")
    _touch(folder / "notes.txt", folder / "inner" / "d.tif")
    assert expand_rasters([folder]) == [folder / "a.TIF", folder / "b.tif", folder / "c.vrt"]


def test_a_folder_without_rasters_is_an_error(tmp_path: Path) -> None:
    _touch(tmp_path / "empty" / "readme.txt")
    with pytest.raises(InputError, match=r"the folder .*empty holds no raster files \(\.tif, \.tiff, \.vrt, \.\.\.\)"):
        expand_rasters([tmp_path / "empty"])


def test_a_list_file_adds_its_entries_after_the_arguments(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _touch(data / "a.tif", data / "tiles" / "t1.tif", data / "tiles" / "t2.tif", tmp_path / "first.tif")
    listing = tmp_path / "lists" / "rasters.txt"
    listing.parent.mkdir()
    listing.write_text(
        f"# the rasters of the survey\n\n  ../data/a.tif  \n../data/tiles/*.tif\n{tmp_path / 'first.tif'}\n   \n"
    )
    got = expand_rasters([tmp_path / "first.tif"], from_list=listing)
    assert all(path.is_absolute() for path in got)
    expected = [tmp_path / "first.tif", data / "a.tif", data / "tiles" / "t1.tif", data / "tiles" / "t2.tif"]
    assert [path.resolve() for path in got] == [path.resolve() for path in expected]


def test_a_list_glob_matching_nothing_names_its_line(tmp_path: Path) -> None:
    listing = tmp_path / "rasters.txt"
    listing.write_text("# comment\nnone/*.tif\n")
    with pytest.raises(InputError, match=r"no raster matches .* \(line 2 of rasters\.txt\)"):
        expand_rasters([], from_list=listing)


def test_a_missing_list_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"the list .*nope\.txt does not exist: give a text file"):
        expand_rasters([], from_list=tmp_path / "nope.txt")


def test_a_list_without_entries_is_an_error(tmp_path: Path) -> None:
    listing = tmp_path / "rasters.txt"
    listing.write_text("# nothing yet\n\n")
    with pytest.raises(InputError, match="names no rasters"):
        expand_rasters(["a.tif"], from_list=listing)


def test_no_raster_at_all_is_an_error() -> None:
    with pytest.raises(InputError, match="give at least one raster .* or --from-list"):
        expand_rasters([])


# --- check_rasters


def test_check_rasters_returns_what_the_run_needs(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "a.tif", scene(6, 10))
    (info,) = check_rasters([path])
    assert info == RasterInfo(path, CRS.from_epsg(32633), 10, 6)


def test_check_rasters_reports_every_problem_at_once(tmp_path: Path) -> None:
    good = _raster(tmp_path / "good.tif")
    text = tmp_path / "x.tif"
    text.write_text("not a raster")
    no_crs = _raster(tmp_path / "nocrs.tif", crs=None)
    with pytest.raises(InputError) as caught:
        check_rasters([good, tmp_path / "missing.tif", text, no_crs])
    message = str(caught.value)
    assert message.startswith("3 of 4 rasters cannot be used: missing.tif does not exist")
    assert "x.tif is not a raster GDAL can read" in message
    assert "nocrs.tif has no CRS" in message and "--pixel-coords" in message
    assert message.endswith("fix them or leave them out of the list")
    assert "good.tif" not in message and str(tmp_path) not in message and "\n" not in message


def test_check_rasters_raises_a_raster_error_when_every_problem_is_one(tmp_path: Path) -> None:
    missing = [tmp_path / f"m{i}.tif" for i in range(7)]
    with pytest.raises(RasterError, match=r"7 of 7 rasters .*m4\.tif does not exist: check the path; and 2 more —"):
        check_rasters(missing)


def test_check_rasters_names_the_path_when_two_share_a_name(tmp_path: Path) -> None:
    with pytest.raises(RasterError) as caught:
        check_rasters([tmp_path / "one" / "a.tif", tmp_path / "two" / "a.tif"])
    assert str(tmp_path / "one" / "a.tif") in str(caught.value) and str(tmp_path / "two" / "a.tif") in str(caught.value)


def test_check_rasters_raises_a_single_problem_as_it_is(tmp_path: Path) -> None:
    with pytest.raises(RasterNotFoundError, match="missing.tif does not exist"):
        check_rasters([_raster(tmp_path / "a.tif"), tmp_path / "missing.tif"])
    with pytest.raises(MissingCRSError):
        check_rasters([_raster(tmp_path / "nocrs.tif", crs=None)])


def test_pixel_coords_accept_a_raster_without_crs(tmp_path: Path) -> None:
    path = _raster(tmp_path / "nocrs.tif", crs=None)
    assert check_rasters([path], pixel_coords=True) == [RasterInfo(path, None, 8, 8)]


# --- crs_groups and check_one_crs


def test_crs_groups_in_order_of_appearance() -> None:
    a, b, c = _info("a.tif", "EPSG:32634"), _info("b.tif", "EPSG:32633"), _info("c.tif", "EPSG:32634")
    assert crs_groups([a, b, c]) == {"EPSG:32634": [a, c], "EPSG:32633": [b]}
    assert crs_groups([_info("p.tif", None)]) == {"pixel coordinates": [_info("p.tif", None)]}


def test_crs_groups_label_a_crs_without_epsg_code_by_name() -> None:
    custom = "+proj=tmerc +lat_0=0 +lon_0=13.1 +k=1 +x_0=0 +y_0=0 +ellps=GRS80 +units=m +no_defs"
    groups = crs_groups([_info("a.tif", custom), _info("b.tif", custom), _info("c.tif", "EPSG:32633")])
    labels = list(groups)
    assert len(labels) == 2 and labels[1] == "EPSG:32633"
    assert [info.path.name for info in groups[labels[0]]] == ["a.tif", "b.tif"]
    assert "PROJCS" not in labels[0] and len(labels[0]) < 60


def test_check_one_crs_returns_the_shared_crs() -> None:
    infos = [_info("a.tif", "EPSG:32633"), _info("b.tif", "EPSG:32633")]
    assert check_one_crs(infos, target_crs=None) == CRS.from_epsg(32633)
    assert check_one_crs([_info("p.tif", None)], target_crs=None) is None


def test_mixed_crss_need_a_target_crs() -> None:
    infos = [_info("c.tif", "EPSG:32634"), _info("a.tif", "EPSG:32633"), _info("b.tif", "EPSG:32633")]
    with pytest.raises(InputError) as caught:
        check_one_crs(infos, target_crs=None)
    message = str(caught.value)
    assert "these rasters are in 2 CRSs (EPSG:32634: c.tif; EPSG:32633: a.tif, b.tif)" in message
    assert "never reprojects" in message and "pass --target-crs EPSG:32633 " in message


def test_mixed_crss_list_at_most_three_names_each() -> None:
    infos = [_info(f"a{i}.tif", "EPSG:32633") for i in range(5)] + [_info("b.tif", "EPSG:4326")]
    with pytest.raises(InputError, match=r"EPSG:32633: a0\.tif, a1\.tif, a2\.tif and 2 more; EPSG:4326: b\.tif\)"):
        check_one_crs(infos, target_crs=None)


def test_a_target_crs_is_the_output_crs() -> None:
    infos = [_info("a.tif", "EPSG:32633"), _info("b.tif", "EPSG:32634")]
    assert check_one_crs(infos, target_crs="EPSG:3035") == CRS.from_epsg(3035)


def test_a_bad_target_crs_is_an_error() -> None:
    with pytest.raises(InputError, match=r"--target-crs 'EPSG:nope' is not a CRS: give an EPSG code"):
        check_one_crs([_info("a.tif", "EPSG:32633")], target_crs="EPSG:nope")


def test_a_target_crs_cannot_reproject_pixel_coordinates() -> None:
    with pytest.raises(InputError, match="--target-crs EPSG:3035 cannot be used with --pixel-coords"):
        check_one_crs([_info("p.tif", None)], target_crs="EPSG:3035")
