"""A bare path given to ``hallmark scan``/``sbom`` is recognised by its content (docker save tar,
OCI layout folder or tar); anything else is an error that lists the accepted prefixes."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from hallmark.cli import app
from tests.index.imagebuilder import Layer, build_image, dist_info, write_docker_archive, write_layout

runner = CliRunner()


def layer() -> bytes:
    return (
        Layer()
        .file("usr/lib/python3/dist-packages/pathpkg-0.1.dist-info/METADATA", dist_info("pathpkg", "0.1"))
        .tar_bytes()
    )


def sbom(ref: str) -> Result:
    return runner.invoke(app, ["sbom", ref, "-f", "json"])


def names(res: Result) -> set[str]:
    assert res.exit_code == 0, res.output
    return {p["name"] for p in json.loads(res.stdout)["packages"]}


@pytest.fixture
def layout_dir(tmp_path: Path) -> Path:
    root = tmp_path / "layout"
    write_layout(str(root), {"v1": build_image([(layer(), "gzip")])})
    return root


def test_docker_archive_tar(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    write_docker_archive(str(archive), [layer()])
    assert "pathpkg" in names(sbom(str(archive)))
    res = runner.invoke(app, ["scan", str(archive), "--scanners", "secret", "-f", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["image"]["repository"] == f"docker-archive:{archive}"


def test_oci_layout_folder_relative_and_tagged(
    layout_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "pathpkg" in names(sbom(str(layout_dir)))
    monkeypatch.chdir(tmp_path)
    assert "pathpkg" in names(sbom("./layout"))
    assert "pathpkg" in names(sbom("./layout:v1"))
    res = sbom("./layout:v2")
    assert res.exit_code != 0 and "no manifest tagged 'v2'" in res.output


def test_oci_layout_tar(layout_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "oci.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(layout_dir, arcname=".")
    assert "pathpkg" in names(sbom(str(archive)))
    assert "pathpkg" in names(sbom(f"oci-archive:{archive}"))


def test_unrecognised_paths_name_the_prefixes(tmp_path: Path) -> None:
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tf:
        tf.add(__file__, arcname="readme.txt")
    folder = tmp_path / "folder"
    folder.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for ref, why in [
        (str(other), "a tar without manifest.json"),
        (str(folder), "a folder without index.json"),
        (str(text), "not a tar file"),
        (str(tmp_path / "missing.tar"), "no such file or folder"),
    ]:
        res = sbom(ref)
        assert res.exit_code == 2, (ref, res.output)
        assert why in res.stderr and "oci:DIR[:tag]" in res.stderr and "docker-archive:FILE" in res.stderr
        res = runner.invoke(app, ["scan", ref, "--scanners", "secret"])
        assert res.exit_code == 2 and "docker-archive:FILE" in res.stderr
