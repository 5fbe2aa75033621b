"""Every batch job's options in the seed tools' spellings (serve_app/jobs/spelling.py):
each long option also as --under_score, each on/off option with 1/0, true/false or
alone; the same namespace as FaceGraph's spelling. `--help` names each alias once. No
job runs here: the runner's own parser, every registered job."""

from __future__ import annotations

import argparse

import pytest

from serve_app.jobs.runner import build_parser, jobs
from serve_app.jobs.spelling import is_switch, underscored

REGISTRY = jobs()
PARSER = build_parser(REGISTRY)
[SUBPARSERS] = [a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)]
JOB_NAMES = sorted({job.name for job in REGISTRY.values()})
FOLDERS = ["--input", "in", "--output", "out"]


def parse(job: str, *argv: str) -> dict:
    return vars(PARSER.parse_args([job, *FOLDERS, *argv]))


def options(job: str) -> list[argparse.Action]:
    return [
        a for a in SUBPARSERS.choices[job]._actions if a.option_strings and a.dest not in ("help", "input", "output")
    ]


VALUES = {"steps": "renderer", "asset": "RetinaFace=retinaface-det-500m"}  # options with their own syntax


def some_value(action: argparse.Action) -> str:
    """A value the option's parser takes (limits are the parameters model's, checked later)."""
    if action.choices:
        return str(list(action.choices)[-1])
    return VALUES.get(action.dest) or {int: "3", float: "0.5"}.get(action.type, "x")


@pytest.mark.parametrize("job", JOB_NAMES)
def test_every_option_answers_to_its_underscore_spelling(job):
    valued = [a for a in options(job) if not is_switch(a)]
    assert valued
    for action in valued:
        ours = action.option_strings[0]
        value = some_value(action)
        assert parse(job, underscored(ours), value) == parse(job, ours, value), ours
        assert parse(job, f"{underscored(ours)}={value}") == parse(job, ours, value), ours


@pytest.mark.parametrize("job", JOB_NAMES)
def test_every_on_off_option_takes_the_seeds_1_and_0(job):
    switches = [a for a in options(job) if is_switch(a)]
    assert any(a.dest == "stop_on_error" for a in switches)
    for action in switches:
        ours = action.option_strings[0]
        seed = underscored(ours)
        on = parse(job, ours)
        # Off: the --no- form where there is one, else the flag's default (not given).
        off = parse(job, action.option_strings[1]) if isinstance(action, argparse.BooleanOptionalAction) else parse(job)
        assert on[action.dest] != off[action.dest], ours
        for argv in ([seed], [seed, "1"], [seed, "true"], [f"{seed}=TRUE"], [ours, "1"]):
            assert parse(job, *argv) == on, argv
        for argv in ([seed, "0"], [seed, "false"], [f"{seed}=0"], [ours, "False"]):
            assert parse(job, *argv) == off, argv


def test_the_seed_004_and_003_forms():
    args = parse(
        "anonymize", "--remove_mouth", "1", "--keep_pose", "--bg_white", "0", "--stop_on_error", "--tex_size", "2048"
    )
    assert (args["remove_mouth"], args["keep_pose"], args["bg_white"], args["stop_on_error"]) == (
        True,
        True,
        False,
        True,
    )
    assert args["tex_size"] == 2048
    assert parse("anonymize", "--remove_mouth", "0")["remove_mouth"] is False
    assert parse("anonymize", "--no-keep-pose", "0")["keep_pose"] is True  # "not no-keep-pose"
    assert parse("anonymize")["remove_mouth"] is None  # not given: the parameters model's default
    args = parse("mask-augment", "--n_augmentations", "3", "--no_mask", "--no_crop", "--crop_style", "buffalo")
    assert (args["n_augmentations"], args["no_mask"], args["no_crop"], args["crop_style"]) == (3, True, True, "buffalo")
    assert (
        parse("mask-augment", "--no_mask", "0")["no_mask"] is None
        and parse("mask-augment", "--no_crop", "0")["no_crop"] is False
    )
    # A value is never a switch's unless it is one of the words: the next option stays an option.
    assert parse("anonymize", "--keep_pose", "--alpha", "0.5")["alpha"] == 0.5


def test_refusals_name_the_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse("anonymize", "--bg_white", "2")
    assert exit_.value.code == 2
    assert "argument --bg-white: takes 1 or 0 (true or false), or no value; not '2'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("mask-augment", "--n_augmentationz", "3")  # no such option: left as typed
    assert "unrecognized arguments: --n_augmentationz 3" in capsys.readouterr().err


@pytest.mark.parametrize("job", JOB_NAMES)
def test_help_shows_our_spelling_and_names_each_alias_once(job):
    text = SUBPARSERS.choices[job].format_help()
    for action in options(job):
        ours = action.option_strings[0]
        line = next(line for line in text.splitlines() if line.strip().startswith(ours))
        alias = underscored(ours)
        if alias != ours:
            assert text.count(alias + " ") + text.count(alias + ")") == 1, alias
            assert f"(or {alias}" in line, line
        if is_switch(action):
            assert "1|0)" in line, line
