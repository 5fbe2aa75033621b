"""README's "Coming from the seed services": every row of its command table run as
written, with the seed's own arguments (only the folders are this test's), through the
`facegraph` entry point on the shared local Ray cluster; what each run writes is checked
against the row's last column, and the options the seed spells its way against what
the job parsed. The defaults table is checked against the parameters models. So the
table cannot drift from the code: a renamed output, option or default fails here.

Seed 004's rows run in the table's order into one output folder, each step reading what
the one before wrote, as the seed's scripts do."""

from __future__ import annotations

import re
import shlex
import shutil

import pytest

from serve_app import cli
from serve_app.config import spec as specs
from serve_app.jobs import runner
from tests.helpers import results_by_path, torch_renderer_config

pytestmark = pytest.mark.graph

SECTION = "## Coming from the seed services"
# Each seed program is a job (and, for seed 004's scripts, a step of it): the rename the table makes.
PROGRAMS = {
    "generate_masked_images.py": ("mask-augment", None),
    "face_3d.py": ("anonymize", "face3d"),
    "segmentation.py": ("anonymize", "segmentation"),
    "anonymization.py": ("anonymize", "anonymization"),
    "renderer.py": ("anonymize", "renderer"),
}
FOLDER_OPTIONS = {"--input", "--output", "--steps"}  # what the FaceGraph command may add before the seed's arguments
# The test's weights and renderer, after the row's own arguments.
TEST_OPTIONS = {
    "mask-augment": ["--asset", "RetinaFace=retinaface-det-500m"],
    "anonymize": ["--asset", "RetinaFace=retinaface-det-500m", "--asset", "TDDFA=tddfa-mb05-120"],
}
TEST_RUN = ["--batch-size", "4", "--cpus-per-worker", "0.5"]
BOOKKEEPING = {runner.RESULTS_FILE, runner.WEIGHTS_FILE}  # the runner's own, rewritten by every run


def readme_table(marker: str) -> list[list[str]]:
    """The rows of the table after `<!-- marker` in the README's section, each a list of
    its cells' backticked texts (one list per cell)."""
    text = (runner.REPO_ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    lines = section[section.index(f"<!-- {marker}") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            break
        rows.append([re.findall(r"`([^`]*)`", cell) for cell in line.strip().strip("|").split(" | ")])
    assert rows, marker
    return rows


COMMANDS = readme_table("seed-commands")
DEFAULTS = readme_table("seed-defaults")


def split_row(row) -> tuple[list[str], list[str], list[str]]:
    (seed,), (ours,), writes = row
    return shlex.split(seed), shlex.split(ours), writes


def row_id(row) -> str:
    seed, _, _ = split_row(row)
    return " ".join(seed[1:]).replace("--input my_dataset/ --output processed_data/ ", "")


def seed_values(seed_args: list[str]) -> dict[str, str | None]:
    """{dest: the word after it, or None for a bare flag} as the seed's command spells it."""
    values, i = {}, 0
    while i < len(seed_args):
        name = seed_args[i][2:].replace("-", "_")
        word = seed_args[i + 1] if i + 1 < len(seed_args) and not seed_args[i + 1].startswith("--") else None
        values[name] = word
        i += 2 if word is not None else 1
    return values


def parsed(job: str, argv: list[str], monkeypatch) -> object:
    """The namespace the job's parser makes of `argv` (no job runs)."""
    seen = {}
    monkeypatch.setattr(runner, "run_job", lambda _job, args: seen.setdefault("args", args) and [])
    assert runner.main([job, *argv]) == 0
    return seen["args"]


@pytest.mark.parametrize("row", COMMANDS, ids=row_id)
def test_a_row_is_the_seed_command_with_the_program_renamed(row, monkeypatch):
    seed, ours, _ = split_row(row)
    assert seed[0] == "python" and ours[:2] == ["facegraph", "batch"]
    job, step = PROGRAMS[seed[1]]
    seed_args, our_args = seed[2:], ours[3:]
    assert ours[2] == job
    # The seed's arguments, verbatim, last; before them only the folders and the step.
    assert our_args[len(our_args) - len(seed_args) :] == seed_args
    added = our_args[: len(our_args) - len(seed_args)]
    assert set(added[::2]) <= FOLDER_OPTIONS and len(added) % 2 == 0
    assert dict(zip(added[::2], added[1::2])).get("--steps") == step
    # Every option the seed spells its way is parsed to the value it says.
    args = parsed(job, our_args, monkeypatch)
    for name, word in seed_values(seed_args).items():
        got = getattr(args, name)
        if word is None:
            assert got is True, name
        elif isinstance(got, bool):
            assert got == specs.FORM_BOOLEANS[word.lower()], name
        else:
            assert got == type(got)(word), name


def test_the_defaults_table_is_the_parameters_models(monkeypatch):
    registry = runner.jobs()
    for (job, field), (seed,), (ours,), how in DEFAULTS:
        info = registry[job].spec.params.model_fields[field]
        assert str(info.default) == ours, (job, field)
        assert seed != ours, (job, field)  # the table lists where they differ
        # Its advice gives the seed's value.
        (advice,) = [h for h in how if h.startswith("--")]
        args = parsed(job, ["--input", "in", "--output", "out", *shlex.split(advice)], monkeypatch)
        assert str(getattr(args, field)) == seed, (job, field)


def written_patterns(writes: list[str], rel: str) -> list[re.Pattern]:
    """A row's `<rel>_f<i>_a<k>_buffalo.jpg` as a regex for one input."""
    out = []
    for pattern in writes:
        regex = re.escape(pattern)
        for word, value in (("rel", re.escape(rel)), ("name", re.escape(rel.rsplit("/", 1)[-1]))):
            regex = regex.replace(re.escape(f"<{word}>"), value)
        out.append(re.compile(regex.replace(re.escape("<i>"), r"\d+").replace(re.escape("<k>"), r"\d+")))
    return out


def check_written(out, writes: list[str]) -> None:
    """Every file the run lists in results.jsonl is one of the row's names, and every
    name of the row was written."""
    bookkeeping = [w for w in writes if "<" not in w]
    assert all((out / name).is_file() for name in bookkeeping)
    per_input = [w for w in writes if "<" in w]
    matched = set()
    for rel, row in results_by_path(out).items():
        assert row["error"] is None, row
        patterns = written_patterns(per_input, rel)
        for path in row["outputs"].values():
            hits = [w for w, p in zip(per_input, patterns) if p.fullmatch(path)]
            assert hits, f"{path} is not in the README row {writes}"
            assert (out / path).is_file()
            matched.update(hits)
    assert matched == set(per_input), f"never written: {set(per_input) - matched}"


@pytest.fixture(scope="module", autouse=True)
def stand_ins():
    """The morphable model's stand-in (the job resolves it in the driver)."""
    from serve_app.config.settings import settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEGRAPH_ALLOW_STAND_INS", "1")
        settings.cache_clear()
        yield
    settings.cache_clear()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, photos_dir):
    """A seed user's folder, small: one face and a photo without one."""
    root = tmp_path_factory.mktemp("photos")
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0001.jpg", root / "face.jpg")
    shutil.copy(photos_dir / "inspireface_view_noface.jpg", root / "none.jpg")
    return root


def facegraph(ours: list[str], src, out, *extra: str) -> int:
    """The row's FaceGraph command with this test's folders, through `facegraph`."""
    argv = list(ours[1:])
    argv[argv.index("--input") + 1] = str(src)
    argv[argv.index("--output") + 1] = str(out)
    return cli.main([*argv, *extra, *TEST_RUN])


SEED_003 = [r for r in COMMANDS if PROGRAMS[split_row(r)[0][1]][0] == "mask-augment"]
SEED_004 = [r for r in COMMANDS if PROGRAMS[split_row(r)[0][1]][0] == "anonymize"]


@pytest.mark.parametrize("row", SEED_003, ids=row_id)
def test_seed_003_rows_write_what_the_table_says(ray_cluster, photos, tmp_path, row):
    _, ours, writes = split_row(row)
    out = tmp_path / "processed_data"
    assert facegraph(ours, photos, out, *TEST_OPTIONS["mask-augment"]) == 0
    check_written(out, writes)
    assert (out / "missed_images.txt").read_text() == "none.jpg\n"
    if "--n_augmentations" in ours:
        count = int(ours[ours.index("--n_augmentations") + 1])
        assert {p.split("_a")[1].split("_")[0] for p in results_by_path(out)["face.jpg"]["outputs"].values()} == {
            str(k) for k in range(count)
        }


def test_seed_004_rows_run_in_turn_over_one_folder(ray_cluster, photos, tmp_path):
    out = tmp_path / "out"
    serve_config = torch_renderer_config(tmp_path)
    for row in SEED_004:
        _, ours, writes = split_row(row)
        step = ours[ours.index("--steps") + 1]
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} if out.exists() else {}
        status = facegraph(ours, photos, out, "--serve-config", str(serve_config), *TEST_OPTIONS["anonymize"])
        assert status == 0, step
        check_written(out, writes)
        rows = results_by_path(out)
        assert all(r["steps"] == [step] for r in rows.values())
        # The row's own options are the ones it ran with.
        for name, word in seed_values(ours[ours.index("--steps") + 2 :]).items():
            if name in rows["face.jpg"]["params"]:
                value = rows["face.jpg"]["params"][name]
                if word is None:
                    assert value is True, name
                elif isinstance(value, bool):
                    assert value == specs.FORM_BOOLEANS[word.lower()], name
                else:
                    assert value == type(value)(word), name
        # Earlier steps' files are read, not written again.
        earlier = [p for p in before if p.name not in BOOKKEEPING and p.exists()]
        assert [p for p in earlier if p.stat().st_mtime_ns != before[p]] == [], step
    assert len(rows["face.jpg"]["faces"]) == 1 and rows["none.jpg"]["faces"] == []
