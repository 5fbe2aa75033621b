"""The anonymize job's --steps on a small folder (one face, no face) on the shared local
Ray cluster: the seed's steps run one range at a time over the folders give the files
of one full run; a re-render with other render options reads anon/ and leaves the
earlier steps' files alone; a step whose input is not there names the step to run first.
The morphable model is the production name, served by its stand-in; the renderer runs
its plain-torch backend (tests/helpers.py)."""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import pytest
from PIL import Image

from serve_app.errors import ApiError
from serve_app.jobs import anonymize_files, runner
from serve_app.jobs.anonymize_steps import STEPS, parse_steps
from serve_app.jobs.runner import main
from tests.helpers import job_argv, results_by_path, torch_renderer_config

pytestmark = pytest.mark.graph

SMALL = ["--tex-size", "256", "--img-size", "128"]
ASSETS = ["--asset", "RetinaFace=retinaface-det-500m", "--asset", "TDDFA=tddfa-mb05-120"]
REL = "one.jpg"
# Files a step reads back come out within one level of the full run's: seg/'s alpha is
# 8-bit where the full run keeps the cut-out in floats, so the re-baked texture's alpha
# (and the frontal render's, which it masks) may round the other way.
ONE_LEVEL = {f"anon/{REL}/one.jpg_texture.png", f"render/{REL}_front.png"}


@pytest.fixture(scope="module", autouse=True)
def stand_ins():
    from serve_app.config.settings import settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEGRAPH_ALLOW_STAND_INS", "1")
        settings.cache_clear()
        yield
    settings.cache_clear()


@pytest.fixture(scope="module")
def serve_config(tmp_path_factory):
    return torch_renderer_config(tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos_dir):
    root = tmp_path_factory.mktemp("in")
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0001.jpg", root / REL)
    shutil.copy(photos_dir / "inspireface_view_noface.jpg", root / "none.jpg")
    return root


def run(folder, out, serve_config, *extra, status=0) -> dict[str, dict]:
    argv = job_argv("anonymize", folder, out, "--serve-config", str(serve_config), *ASSETS, *SMALL, *extra)
    assert main(argv) == status
    return results_by_path(out)


def files(out) -> set[str]:
    """The job's files under `out`, the runner's bookkeeping (rewritten by every run) aside."""
    bookkeeping = {runner.RESULTS_FILE, runner.WEIGHTS_FILE}
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name not in bookkeeping}


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


@pytest.fixture(scope="module")
def full(ray_cluster, folder, serve_config, tmp_path_factory):
    """One run of all four steps: what the step-by-step runs are held to."""
    out = tmp_path_factory.mktemp("full")
    rows = run(folder, out, serve_config)
    assert all(r["error"] is None and r["steps"] == list(STEPS) for r in rows.values())
    return out


def test_steps_one_range_at_a_time_give_the_full_runs_files(full, folder, serve_config, tmp_path):
    out = tmp_path / "out"
    rows = run(folder, out, serve_config, "--steps", "face3d,segmentation")
    assert rows[REL]["error"] is None and rows[REL]["steps"] == ["face3d", "segmentation"]
    assert set(rows[REL]["outputs"].values()) == {
        f"face3d/{REL}/faces.json",
        f"face3d/{REL}/face0.json",
        f"face3d/{REL}/face0_vertices.npy",
        f"seg/{REL}_masked.png",
    }
    rows = run(folder, out, serve_config, "--steps", "anonymization,renderer")
    assert rows[REL]["error"] is None and rows[REL]["steps"] == ["anonymization", "renderer"]
    assert rows[REL]["faces"] == results_by_path(full)[REL]["faces"]  # from face3d/, as step 1 found them

    assert files(out) == files(full)
    for rel in sorted(files(full)):
        if rel in ONE_LEVEL:
            assert np.abs(pixels(out / rel) - pixels(full / rel)).max() <= 1, rel
        else:
            assert (out / rel).read_bytes() == (full / rel).read_bytes(), rel


def test_rerender_with_other_options_reads_anon_and_leaves_the_rest(full, folder, serve_config, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(full, out)
    rendered = ("render/", "anonymized/")
    earlier = {rel: (out / rel).stat().st_mtime_ns for rel in files(out) if not rel.startswith(rendered)}
    rows = run(folder, out, serve_config, "--steps", "renderer", "--img_size", "96", "--bg_white", "1")
    assert rows[REL]["error"] is None and rows[REL]["steps"] == ["renderer"]
    assert set(rows[REL]["outputs"].values()) == {f"render/{REL}_front.png", f"anonymized/{REL}.png"}
    assert {rel: (out / rel).stat().st_mtime_ns for rel in earlier} == earlier  # not written again
    front = pixels(out / f"render/{REL}_front.png")
    assert front.shape == (96, 96, 4) and (front[0, 0, :3] == 255).all()  # white background
    assert pixels(full / f"render/{REL}_front.png").shape == (128, 128, 4)
    # The photo's composite does not depend on the frontal render's options.
    assert np.abs(pixels(out / f"anonymized/{REL}.png") - pixels(full / f"anonymized/{REL}.png")).max() <= 1

    # The same steps and options again: nothing to do.
    capsys.readouterr()
    run(folder, out, serve_config, "--steps", "renderer", "--img_size", "96", "--bg_white", "1")
    assert "2 inputs, 2 already done, 0 to run" in capsys.readouterr().out


def test_a_step_whose_input_is_missing_names_it(full, tmp_path):
    """An error row (ApiError -> `code: message`) that says which step to run first."""
    out = tmp_path / "out"
    with pytest.raises(ApiError, match=rf"^no face3d/{REL}/faces.json under --output: run the face3d step first"):
        anonymize_files.read_face3d(out, REL, (250, 250))
    shutil.copytree(full / "face3d", out / "face3d")
    assert len(anonymize_files.read_face3d(out, REL, (250, 250))) == 1
    with pytest.raises(ApiError, match="is for a 250x250 image, this one is 300x250"):
        anonymize_files.read_face3d(out, REL, (250, 300))
    with pytest.raises(ApiError, match=rf"no seg/{REL}_masked.png .* run the segmentation step first") as info:
        anonymize_files.read_seg(out, REL, (250, 250))
    assert info.value.code == "missing_step"
    with pytest.raises(ApiError, match=rf"no anon/{REL}/one.jpg.obj .* run the anonymization step first"):
        anonymize_files.read_anon(out, REL, 1)


def test_steps_are_a_contiguous_range_in_order(tmp_path):
    assert parse_steps("all") == STEPS
    assert parse_steps("renderer") == ("renderer",)
    assert parse_steps("Segmentation, anonymization") == ("segmentation", "anonymization")
    assert parse_steps("face_3d.py") == ("face3d",)  # the seed's script name
    for bad in ("segmentation,renderer", "renderer,anonymization", "face3d,face3d", "render", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_steps(bad)
    with pytest.raises(SystemExit) as exit_:  # refused before any work
        main(["anonymize", "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--steps", "face3d,renderer"])
    assert exit_.value.code == 2 and not (tmp_path / "out").exists()
