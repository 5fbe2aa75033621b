"""The mask-augment batch job on Ray Data (the shared local cluster), real RetinaFace
(det_500m) and FaceMesh: the seed script's command-line combinations on a single file,
then a folder with a nested tree, a corrupt file and images without a face, and a
re-run that skips what is done and retries what failed."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from serve_app.faces.mask_painting import MASK_TYPES, draw_augmentation, load_templates
from serve_app.imaging import decode_image
from serve_app.jobs.runner import main
from serve_app.pipelines.mask_augment import MaskAugmentParams, dataset_seeded, seed_from
from tests.helpers import job_argv, results_by_path
from tests.images import gradient_rgb

pytestmark = pytest.mark.graph

LOG_HEADER = "image_path,face_index,augmentation,mask_type,mask_color,crop_style,output_path,error"  # logs.csv
LOG_COLUMNS = LOG_HEADER.split(",")
BOOKKEEPING = {"results.jsonl", "logs.csv", "missed_images.txt", "weights.json"}
STYLES = ("buffalo", "original_cropping", "scale_shift")
ONE_FACE = "lfw_Rob_Lowe_0001.jpg"  # 250 x 250


def run(src, out, *extra) -> dict[str, dict]:
    # The models as serve_config.yaml configures them, with the test detector's weights.
    assert main(job_argv("mask-augment", src, out, "--asset", "RetinaFace=retinaface-det-500m", *extra)) == 0
    return results_by_path(out)


def logs_of(out) -> list[dict]:
    with open(out / "logs.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == LOG_COLUMNS
        return list(reader)


def written(out) -> set[str]:
    """Every output file under `out` (relative paths), bookkeeping and temporaries aside."""
    return {
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and p.name not in BOOKKEEPING and not p.name.startswith(".")
    }


def mtimes(out) -> dict[str, int]:
    return {rel: (out / rel).stat().st_mtime_ns for rel in written(out)}


def check_logs_match_files(out, logs) -> None:
    """Every output_path of logs.csv exists, and every written file is in logs.csv."""
    paths = {line["output_path"] for line in logs if line["output_path"]}
    assert all((out / p).is_file() for p in paths)
    assert paths == written(out)


@pytest.fixture(scope="module")
def solo(tmp_path_factory, photos_dir):
    """face.jpg, one face, in a folder with another image that a single-file run must not touch."""
    root = tmp_path_factory.mktemp("solo")
    shutil.copy(photos_dir / ONE_FACE, root / "face.jpg")
    shutil.copy(photos_dir / "3ddfa_trump_hillary.jpg", root / "other.jpg")
    return root / "face.jpg"


def crop_files(augmentations: int, styles=("buffalo",)) -> set[str]:
    return {f"face.jpg_f0_a{a}_{s}.jpg" for a in range(augmentations) for s in styles}


COMBINATIONS = {
    "default": ([], crop_files(1)),
    "two augmentations, all styles": (["--n-augmentations", "2", "--crop-style", "all"], crop_files(2, STYLES)),
    "no mask": (["--no-mask"], crop_files(1)),
    "no crop": (["--no-crop"], {"face.jpg_a0_masked.png"}),
    "no mask, no crop": (["--no-mask", "--no-crop"], {"face.jpg_a0_original.png"}),
    "two mask types": (["--mask-types", "surgical,cloth", "--n-augmentations", "4"], crop_files(4)),
    "seed": (["--seed", "7"], crop_files(1)),
}


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_command_line_combinations_on_a_single_file(ray_cluster, solo, tmp_path, combination):
    extra, expected = COMBINATIONS[combination]
    out = tmp_path / "out"
    rows = run(solo, out, *extra)
    assert list(rows) == ["face.jpg"]  # only the file given, not its neighbour
    row = rows["face.jpg"]
    assert row["error"] is None and row["faces"] == 1
    assert written(out) == expected and set(row["outputs"].values()) == expected
    logs = logs_of(out)
    check_logs_match_files(out, logs)
    assert (out / "missed_images.txt").read_text() == ""
    assert all(line["image_path"] == "face.jpg" and line["error"] == "" for line in logs)
    original = decode_image(solo.read_bytes())

    for line in logs:
        assert line["face_index"] == "0"
        image = np.asarray(Image.open(out / line["output_path"]))
        if line["output_path"].endswith(".jpg"):
            assert image.shape == (112, 112, 3) and line["crop_style"] in STYLES
            assert line["output_path"] == f"face.jpg_f0_a{line['augmentation']}_{line['crop_style']}.jpg"
        else:
            assert image.shape == original.shape and line["crop_style"] == ""
        if "--no-mask" in extra:
            assert line["mask_type"] == line["mask_color"] == ""
        else:
            assert line["mask_type"] in MASK_TYPES
            assert line["mask_type"] not in ("surgical", "N95", "KN95") or line["mask_color"].startswith("#")
            assert line["mask_type"] != "cloth" or "/" in line["mask_color"]  # the texture

    if combination == "no mask, no crop":  # the original, lossless
        np.testing.assert_array_equal(np.asarray(Image.open(out / "face.jpg_a0_original.png")), original)
    if combination == "no crop":  # every face masked
        masked = np.asarray(Image.open(out / "face.jpg_a0_masked.png"))
        assert (masked != original).any(axis=2).sum() > 1000
    if combination == "two augmentations, all styles":
        assert sorted((line["augmentation"], line["crop_style"]) for line in logs) == sorted(
            (str(a), s) for a in range(2) for s in STYLES
        )
    if combination == "two mask types":
        assert {line["mask_type"] for line in logs} <= {"surgical", "cloth"} and len(logs) == 4
    # The image's seed: from --seed and its path, else from its path alone.
    seed = 7 if combination == "seed" else None
    assert row["seed"] == dataset_seeded(MaskAugmentParams(seed=seed), "face.jpg").seed
    assert row["seed"] == (seed_from("7:face.jpg") if seed else seed_from("face.jpg"))
    if combination in ("default", "seed"):
        # The first face's mask is the first draw of the generator (seed, 0).
        library = load_templates()
        mask_type, color, texture = draw_augmentation(
            np.random.default_rng([row["seed"], 0]), MASK_TYPES, library.texture_names
        )
        assert (logs[0]["mask_type"], logs[0]["mask_color"]) == (mask_type, color or texture)


def test_bad_options_stop_before_any_work(solo, tmp_path):
    with pytest.raises(SystemExit, match="mask-types"):
        run(solo, tmp_path / "out", "--mask-types", "surgical,balaclava")
    with pytest.raises(SystemExit, match="n-augmentations"):
        run(solo, tmp_path / "out", "--n-augmentations", "17")
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.fixture
def folder(tmp_path, photos_dir):
    root = tmp_path / "in"
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(photos_dir / ONE_FACE, root / "one.jpg")
    shutil.copy(photos_dir / "3ddfa_trump_hillary.jpg", root / "nested" / "deeper" / "two.jpg")
    shutil.copy(photos_dir / "inspireface_view_noface.jpg", root / "nested" / "none.jpg")
    gradient_rgb(320, 240).save(root / "nested" / "gradient.png")
    (root / "nested" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / ".hidden.jpg").write_bytes(b"skipped")
    return root


def test_folder_mirrored_errors_missed_and_a_resumable_rerun(ray_cluster, folder, tmp_path, photos_dir, capsys):
    out = tmp_path / "out"
    rows = run(folder, out)
    assert list(rows) == [
        "nested/broken.jpg",
        "nested/deeper/two.jpg",
        "nested/gradient.png",
        "nested/none.jpg",
        "one.jpg",
    ]
    assert rows["nested/broken.jpg"]["error"].startswith("corrupt_image")
    assert rows["nested/none.jpg"]["faces"] == rows["nested/gradient.png"]["faces"] == 0
    assert rows["nested/none.jpg"]["outputs"] == {} and rows["nested/none.jpg"]["error"] is None
    two = rows["nested/deeper/two.jpg"]
    assert two["faces"] == 2 and two["seed"] == seed_from("nested/deeper/two.jpg")
    # Mirrored, numbered per face: nothing overwrites anything.
    assert set(two["outputs"].values()) == {
        "nested/deeper/two.jpg_f0_a0_buffalo.jpg",
        "nested/deeper/two.jpg_f1_a0_buffalo.jpg",
    }
    assert written(out) == {"one.jpg_f0_a0_buffalo.jpg", *two["outputs"].values()}
    assert (out / "missed_images.txt").read_text() == "nested/gradient.png\nnested/none.jpg\n"
    logs = logs_of(out)
    check_logs_match_files(out, logs)
    [broken] = [line for line in logs if line["image_path"] == "nested/broken.jpg"]
    assert broken["error"].startswith("corrupt_image")
    assert all(broken[c] == "" for c in LOG_COLUMNS if c not in ("image_path", "error"))
    assert [line["face_index"] for line in logs if line["image_path"] == "nested/deeper/two.jpg"] == ["0", "1"]
    assert not any(line["image_path"] in ("nested/none.jpg", "nested/gradient.png") for line in logs)

    # Re-run after the broken file is replaced: only it runs again; nothing done is rewritten.
    before, lines_before = mtimes(out), (out / "results.jsonl").read_text().splitlines()
    shutil.copy(photos_dir / "lfw_Nathalie_Baye_0002.jpg", folder / "nested" / "broken.jpg")
    capsys.readouterr()
    again = run(folder, out)
    assert "5 inputs, 4 already done, 1 to run" in capsys.readouterr().out
    assert {p: r for p, r in again.items() if p != "nested/broken.jpg"} == {
        p: r for p, r in rows.items() if p != "nested/broken.jpg"
    }
    lines_after = (out / "results.jsonl").read_text().splitlines()
    assert [x for x in lines_after if "broken" not in x] == [x for x in lines_before if "broken" not in x]
    fixed = again["nested/broken.jpg"]
    assert fixed["error"] is None and fixed["faces"] == 1
    assert written(out) == set(before) | {"nested/broken.jpg_f0_a0_buffalo.jpg"}
    assert {rel: t for rel, t in mtimes(out).items() if rel in before} == before
    logs = logs_of(out)
    check_logs_match_files(out, logs)
    assert not any(line["error"] for line in logs)

    # Nothing left to do: no model runs, results.jsonl and every file stay as they are.
    settled, results, logs_text = mtimes(out), (out / "results.jsonl").read_bytes(), (out / "logs.csv").read_bytes()
    capsys.readouterr()
    run(folder, out)
    assert "5 inputs, 5 already done, 0 to run" in capsys.readouterr().out
    assert (out / "results.jsonl").read_bytes() == results and (out / "logs.csv").read_bytes() == logs_text
    assert mtimes(out) == settled
