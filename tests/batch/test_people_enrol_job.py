"""Batch jobs that write people into the gallery: `people-enrol` (one folder per person,
the folder name is the name) and `face-extract --enrol` (one unnamed person per unique
face), with real models, into a SQLite gallery of the test's own (its --serve-config's
FaceGallery block). Resumed runs add only what is new, and never bring back a person
erased in between."""

import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from deployments.face_gallery.errors import unwrap
from deployments.face_gallery.model import DeletePerson, FaceGallery, FaceGalleryConfig, ListPeople, Search
from serve_app.config.settings import REPO_ROOT
from serve_app.imaging import decode_image
from serve_app.jobs.runner import main
from tests.helpers import TEST_WEIGHTS, job_argv, results_by_path

pytestmark = pytest.mark.graph
THRESHOLD = 0.5  # the test recogniser's calibrated threshold


def gallery_config(tmp_path, keep_crops=False):
    """The repo's serve config with the gallery on SQLite in tmp_path/gallery."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    [models] = [app for app in doc["applications"] if app["name"] == "models"]
    data_dir = tmp_path / "gallery"
    store = {"store": "sqlite", "data_dir": str(data_dir), "keep_crops": keep_crops}
    models["args"]["models"]["FaceGallery"] = {"config": store}
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, FaceGalleryConfig(**store)


def people(cfg) -> dict:
    """{person_id: PersonRecord} in the gallery, read from the store as a server would."""
    gallery = FaceGallery(cfg)
    try:
        return {p.person_id: p for p in unwrap(gallery.predict([ListPeople(1000)])[0]).people}
    finally:
        gallery.close()


def best_match(cfg, embedding):
    gallery = FaceGallery(cfg)
    try:
        probe = np.asarray([embedding], np.float32)
        (matches,) = unwrap(gallery.predict([Search(probe, "arcface-mobilefacenet-128d", THRESHOLD)])[0]).matches
        return matches[0] if matches else None
    finally:
        gallery.close()


def mirrored(src, dst):
    """Another photo of the same person: the source mirrored."""
    Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(dst, quality=95)


def test_people_enrol_one_folder_per_person_resumable(tmp_path, photos_dir, ray_cluster, capsys):
    config, cfg = gallery_config(tmp_path)
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "Rob_Lowe").mkdir(parents=True)
    (src / "Nathalie_Baye").mkdir()
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0001.jpg", src / "Rob_Lowe" / "1.jpg")
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0002.jpg", src / "Rob_Lowe" / "2.jpg")
    shutil.copy(photos_dir / "lfw_Nathalie_Baye_0002.jpg", src / "Nathalie_Baye" / "1.jpg")
    shutil.copy(photos_dir / "inspireface_view_noface.jpg", src / "Nathalie_Baye" / "view.jpg")
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0001.jpg", src / "loose.jpg")
    argv = job_argv("people-enrol", src, out, *TEST_WEIGHTS, "--serve-config", str(config), batch_size=2)

    assert main(argv) == 0
    rows = results_by_path(out)
    assert rows["loose.jpg"]["error"].startswith("no_person_folder")
    assert rows["Nathalie_Baye/view.jpg"]["error"].startswith("no_face")
    assert rows["Rob_Lowe/1.jpg"]["person"] == "Rob_Lowe" and len(rows["Rob_Lowe/1.jpg"]["embedding"]) == 128
    assert Image.open(out / rows["Rob_Lowe/2.jpg"]["outputs"]["face"]).size == (160, 160)
    assert "2 people enrolled, 0 given more faces, 3 faces" in capsys.readouterr().out
    enrolled = people(cfg)
    by_name = {p.name: p for p in enrolled.values()}
    assert sorted(by_name) == ["Nathalie_Baye", "Rob_Lowe"]
    assert (by_name["Rob_Lowe"].faces, by_name["Nathalie_Baye"].faces) == (2, 1)
    assert by_name["Rob_Lowe"].metadata == {"source": "people-enrol", "folder": "Rob_Lowe"}
    # The search a server would run finds each person from their own photo's face.
    assert best_match(cfg, rows["Rob_Lowe/2.jpg"]["embedding"]).person_id == by_name["Rob_Lowe"].person_id

    # Nothing new (only the two refused images are tried again, as every job does): no person twice.
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 already done, 2 to run" in printed and "0 people enrolled, 0 given more faces, 0 faces" in printed
    assert people(cfg).keys() == enrolled.keys()

    # A new photo joins its person; a person erased in between is not brought back.
    mirrored(photos_dir / "lfw_Nathalie_Baye_0002.jpg", src / "Nathalie_Baye" / "2.jpg")
    mirrored(photos_dir / "lfw_Rob_Lowe_0002.jpg", src / "Rob_Lowe" / "3.jpg")
    gallery = FaceGallery(cfg)
    unwrap(gallery.predict([DeletePerson(by_name["Rob_Lowe"].person_id, actor="test")])[0])
    gallery.close()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "0 people enrolled, 1 given more faces, 1 faces" in printed and "1 faces of people erased" in printed
    after = {p.name: p for p in people(cfg).values()}
    assert list(after) == ["Nathalie_Baye"] and after["Nathalie_Baye"].faces == 2


def test_face_extract_enrol_one_person_per_unique_face(tmp_path, photos_dir, ray_cluster, capsys):
    config, cfg = gallery_config(tmp_path)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0001.jpg", src / "rob1.jpg")
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0002.jpg", src / "rob2.jpg")
    shutil.copy(photos_dir / "lfw_Nathalie_Baye_0002.jpg", src / "nathalie.jpg")
    argv = job_argv("face-extract", src, out, *TEST_WEIGHTS, "--serve-config", str(config), "--enrol", batch_size=2)

    assert main(argv) == 0
    assert "2 people enrolled, 0 given more faces, 3 faces" in capsys.readouterr().out
    enrolled = sorted(people(cfg).values(), key=lambda p: -p.faces)
    assert [(p.name, p.faces) for p in enrolled] == [(None, 2), (None, 1)]
    rows = results_by_path(out)
    rob = best_match(cfg, rows["rob2.jpg"]["faces"][0]["embedding"])
    assert rob.person_id == enrolled[0].person_id
    # A re-run enrols nobody again.
    assert main(argv) == 0
    assert "face-extract: 0 people enrolled, 0 given more faces, 0 faces" in capsys.readouterr().out
    assert len(people(cfg)) == 2


def enrol_locally(cfg, photos):
    """One person enrolled from `photos` as /v1/people enrols (largest face, real test
    models, in this process: no Ray) into the gallery `cfg`. -> the embeddings enrolled."""
    import asyncio

    from deployments.face_gallery.model import Enrol
    from deployments.serving import LocalBatcher
    from serve_app.config.model_tier import ModelArgs, model_config
    from serve_app.pipelines.people import PeopleParams, largest_faces

    det_cls, det_cfg, _ = model_config("RetinaFace", ModelArgs(asset="retinaface-det-500m"))
    detect = LocalBatcher(det_cls(det_cfg))
    arc_cls, arc_cfg, weights = model_config("ArcFace", ModelArgs(asset="arcface-mobilefacenet-128d"))
    embed = LocalBatcher(arc_cls(arc_cfg))

    def loader(path):
        async def load():
            return decode_image(path.read_bytes())

        return load

    found = asyncio.run(largest_faces([loader(p) for p in photos], PeopleParams(), detect, embed))
    gallery = FaceGallery(cfg)
    try:
        unwrap(gallery.predict([Enrol(found.embeddings, weights, name="Rob", crops=found.headshots)])[0])
    finally:
        gallery.close()
    return found.embeddings


def test_gallery_reembed_from_kept_crops(tmp_path, photos_dir, capsys):
    """`facegraph gallery reembed` rebuilds every embedding from the crops the gallery
    kept: forced with the same recogniser, each face gets back (nearly) the embedding the
    enrolment made from the photo, so the 160 px crop shrunk to 112 px is the
    recogniser's input; without crops it changes nothing and says why."""
    from serve_app.jobs.gallery import main as gallery_main

    photos = [photos_dir / "lfw_Rob_Lowe_0001.jpg", photos_dir / "lfw_Rob_Lowe_0002.jpg"]
    config, cfg = gallery_config(tmp_path, keep_crops=True)
    enrolled = enrol_locally(cfg, photos)
    assert enrolled.shape == (2, 128)
    reembed = ["reembed", "--serve-config", str(config), "--asset", "ArcFace=arcface-mobilefacenet-128d"]

    assert gallery_main(reembed) == 0
    assert "already come from arcface-mobilefacenet-128d: nothing to do" in capsys.readouterr().out
    assert gallery_main([*reembed, "--force"]) == 0
    assert "2 faces of 1 people now come from arcface-mobilefacenet-128d" in capsys.readouterr().out

    gallery = FaceGallery(cfg)
    try:
        stored = np.stack([np.frombuffer(e, "<f4") for _, _, e in gallery.store.load().rows])
        (person,) = people(cfg).values()
        assert [a.action for a in gallery.store.audit(person.person_id)] == ["enrol", "reembed"]
    finally:
        gallery.close()
    similarity = stored @ enrolled.T  # each re-embedded face against both enrolled ones
    assert similarity.max(axis=1).min() > 0.95, similarity

    # A gallery whose faces kept no crop: refused, nothing changed.
    bare_config, bare_cfg = gallery_config(tmp_path / "bare")
    enrol_locally(bare_cfg, photos)
    with pytest.raises(SystemExit, match="2 of the gallery's 2 faces kept no crop"):
        gallery_main(["reembed", "--serve-config", str(bare_config), "--force"])
