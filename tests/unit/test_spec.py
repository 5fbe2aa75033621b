"""serve_app/config/spec.py: one parameters model per pipeline, from which the HTTP form and
the batch job's command-line options are both derived. The form, the options and the
model itself accept and refuse by the same limits; a new field appears in both."""

# No `from __future__ import annotations`: FastAPI must see the route's real form
# annotation, built from a local variable.

import argparse
from typing import Annotated, Literal

import pytest
from fastapi import FastAPI, Form
from fastapi.testclient import TestClient
from pydantic import Field, ValidationError

from serve_app.config.settings import Sam2Config
from serve_app.config.spec import Params, PipelineSpec, add_arguments, form_model, from_arguments, from_form
from serve_app.pipelines.face_extract import SPEC as EXTRACT
from serve_app.pipelines.face_mask import SPEC as MASK
from serve_app.pipelines.face_mask_sam2 import SPEC as MASK_SAM2

SPECS = [MASK, MASK_SAM2, EXTRACT]
PARAMS = [s.params for s in SPECS]


# ---- helpers: the form and the command line, each as the apps and jobs build them ----


def form_client(params: type[Params]) -> TestClient:
    """A FastAPI app whose one route takes `params` as a form (as the mask apps do,
    beside an image) and answers with the parameters it got."""
    app = FastAPI()

    @app.post("/")
    async def take(form: Annotated[form_model(params), Form()]) -> dict:
        return from_form(params, form).model_dump()

    return TestClient(app)


def parser_for(params: type[Params], **kw) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="job", exit_on_error=False)
    add_arguments(parser, params, **kw)
    return parser


def cli(params: type[Params], argv: list[str], prefix: str = "", skip: tuple[str, ...] = ()):
    args = parser_for(params, prefix=prefix, skip=skip).parse_args(argv)
    return from_arguments(params, args, prefix=prefix)


def option(name: str, prefix: str = "") -> str:
    return "--" + prefix + name.replace("_", "-")


def text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def boundaries(params: type[Params]):
    """(field, value, accepted) at and just past every numeric limit of `params`."""
    cases = []
    for name, info in params.model_fields.items():
        step = 1 if info.annotation is int else 0.001
        for meta in info.metadata:
            for attr, inside, outside in (("ge", 0, -step), ("le", 0, step), ("gt", step, 0), ("lt", -step, 0)):
                limit = getattr(meta, attr, None)
                if limit is not None:
                    cases.append((name, limit + inside, True))
                    cases.append((name, limit + outside, False))
    return cases


LIMIT_CASES = [(p, name, value, ok) for p in PARAMS for name, value, ok in boundaries(p)]


def case_id(case) -> str:
    params, name, value, ok = case
    return f"{params.__name__}.{name}={value}-{'ok' if ok else 'refused'}"


# ---- the spec of every pipeline ----------------------------------------------------------


def test_every_pipeline_has_one_spec():
    assert [s.name for s in SPECS] == ["face_mask", "face_mask_sam2", "face_extract"]
    for spec in SPECS:
        assert isinstance(spec, PipelineSpec) and issubclass(spec.params, Params) and spec.models


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.__name__)
def test_params_are_frozen_and_refuse_unknown_names(params):
    p = params()
    name = next(iter(params.model_fields))
    with pytest.raises(ValidationError):
        setattr(p, name, getattr(p, name))
    with pytest.raises(ValidationError, match="extra"):
        params(no_such_parameter=1)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.__name__)
def test_every_field_is_documented_and_bounded(params):
    for name, info in params.model_fields.items():
        assert info.description, name
        if info.annotation in (int, float):
            assert any(getattr(m, a, None) is not None for m in info.metadata for a in ("ge", "gt")), name
            assert any(getattr(m, a, None) is not None for m in info.metadata for a in ("le", "lt")), name


# ---- the same limits in the model, the form and the command line ------------------------


@pytest.mark.parametrize("case", LIMIT_CASES, ids=case_id)
def test_model_form_and_options_accept_and_refuse_alike(case):
    params, name, value, ok = case
    assert LIMIT_CASES  # the pipelines do have limits
    # The model itself.
    if ok:
        assert getattr(params(**{name: value}), name) == pytest.approx(value)
    else:
        with pytest.raises(ValidationError):
            params(**{name: value})
    # The HTTP form.
    resp = form_client(params).post("/", data={name: text(value)})
    if ok:
        assert resp.status_code == 200, resp.text
        assert resp.json()[name] == pytest.approx(value)
    else:
        assert resp.status_code == 422 and name in resp.text
    # The command line.
    if ok:
        assert getattr(cli(params, [option(name), text(value)]), name) == pytest.approx(value)
    else:
        with pytest.raises(SystemExit) as info:
            cli(params, [option(name), text(value)])
        message = str(info.value.code)
        assert message.startswith(f"error: {option(name)}: ") and "\n" not in message


def test_the_form_takes_every_parameter_and_ignores_other_form_fields():
    client = form_client(MASK.params)
    resp = client.post(
        "/",
        data={
            "include_hair": "true",
            "max_size": "64",
            "expand": "0.5",
            "threshold": "0.25",
            "use_crf": "false",
            "outputs": "mask",
        },
    )  # `outputs` belongs to the app
    assert resp.status_code == 200, resp.text
    assert resp.json() == MASK.params(include_hair=True, max_size=64, expand=0.5, threshold=0.25).model_dump()
    assert client.post("/", data={}).json() == MASK.params().model_dump()  # nothing sent: the model's defaults
    assert client.post("/", data={"max_size": "big"}).status_code == 422


# ---- options from every field ---------------------------------------------------------------


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.__name__)
def test_every_field_is_an_option_defaulting_to_the_models_default(params):
    parser = parser_for(params)
    options = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(options) == set(params.model_fields)
    for name, action in options.items():
        assert option(name) in action.option_strings and action.default is None
        info = params.model_fields[name]
        shown = "unset" if info.default is None else info.default  # None: the caller resolves it
        assert info.description in action.help and f"[default: {shown}]" in action.help
    args = parser.parse_args([])
    assert all(getattr(args, name) is None for name in params.model_fields)
    assert from_arguments(params, args) == params()  # unset options: the model's own defaults


def test_help_shows_the_limits():
    parser = parser_for(MASK.params)
    (max_size,) = [a for a in parser._actions if a.dest == "max_size"]
    assert max_size.help.endswith("[default: 448] (>= 32, <= 2048)")


def test_options_parse_to_the_fields_types():
    p = cli(MASK.params, ["--max-size", "300", "--expand", "0.25", "--threshold", "0.75"])
    assert (p.max_size, p.expand, p.threshold) == (300, 0.25, 0.75)
    assert isinstance(p.max_size, int) and isinstance(p.expand, float)
    p = cli(EXTRACT.params, ["--similarity-threshold", "0.55", "--min-face-size", "12"])
    assert (p.similarity_threshold, p.min_face_size) == (0.55, 12.0)


def test_bool_fields_are_on_off_flags():
    assert cli(MASK.params, ["--include-hair"]).include_hair is True
    assert cli(MASK.params, ["--no-include-hair"]).include_hair is False
    assert cli(MASK.params, []).include_hair is False
    # A flag whose default is on can be turned off, and stays on when not given.
    assert MASK_SAM2.params().multimask is True
    assert cli(MASK_SAM2.params, ["--no-multimask"]).multimask is False
    assert cli(MASK_SAM2.params, []).multimask is True
    with pytest.raises((SystemExit, argparse.ArgumentError)):
        parser_for(MASK.params).parse_args(["--include-hair", "yes"])


def test_a_bad_value_exits_with_one_line_naming_the_option():
    with pytest.raises(SystemExit) as info:
        cli(MASK.params, ["--max-size", "4096"])
    assert info.value.code == "error: --max-size: Input should be less than or equal to 2048"
    with pytest.raises(SystemExit) as info:
        cli(MASK.params, ["--max-size", "8", "--threshold", "2"])
    message = str(info.value.code)
    assert "\n" not in message and "--max-size: " in message and "--threshold: " in message
    # A value of the wrong type is argparse's own refusal, naming the option too.
    with pytest.raises(argparse.ArgumentError, match="--max-size"):
        parser_for(MASK.params).parse_args(["--max-size", "big"])


def test_prefixed_options_for_a_settings_model():
    """The SAM2 job options: `--sam2-` + the field, the key never on a command line."""
    kw = {"prefix": "sam2-", "skip": ("api_key",)}
    parser = parser_for(Sam2Config, **kw)
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--sam2-url", "--sam2-timeout-s", "--sam2-retries", "--sam2-concurrency", "--sam2-send"} <= flags
    assert "--sam2-api-key" not in flags
    cfg = cli(Sam2Config, ["--sam2-timeout-s", "2.5", "--sam2-send", "crop"], **kw)
    assert cfg.timeout_s == 2.5 and cfg.send == "crop" and cfg.retries == Sam2Config().retries
    with pytest.raises(SystemExit) as info:
        cli(Sam2Config, ["--sam2-timeout-s", "0"], **kw)
    assert str(info.value.code).startswith("error: --sam2-timeout-s: ")
    with pytest.raises(argparse.ArgumentError):  # a Literal is a choice
        parser.parse_args(["--sam2-send", "both"])


# ---- one new field: a form field and an option, with nothing else to write ---------------


class WiderMask(MASK.params):
    """A throwaway pipeline parameters model: the mask's, plus three new fields (one
    whose name ends another's: `size` beside `max_size`)."""

    feather: int = Field(3, ge=0, le=20, description="edge feathering in pixels")
    mode: Literal["soft", "hard"] = Field("hard", description="edge style")
    size: int = Field(10, ge=1, le=100, description="a field named like the end of max_size")


def test_a_new_field_is_a_form_field_and_an_option():
    new = {"feather", "mode", "size"}
    assert new <= set(WiderMask.model_fields) and not new & set(MASK.params.model_fields)
    # The form takes it, by the same limits.
    client = form_client(WiderMask)
    resp = client.post("/", data={"feather": "7", "mode": "soft", "max_size": "64"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == WiderMask(feather=7, mode="soft", max_size=64).model_dump()
    assert client.post("/", data={"feather": "21"}).status_code == 422
    assert client.post("/", data={"mode": "fuzzy"}).status_code == 422
    assert client.post("/", data={}).json()["feather"] == 3
    # The command line has it, defaulting to the model's default.
    parser = parser_for(WiderMask)
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--feather", "--mode", "--size", "--max-size"} <= flags
    assert cli(WiderMask, []) == WiderMask()
    assert cli(WiderMask, ["--feather", "0", "--mode", "soft"]).feather == 0
    with pytest.raises(SystemExit) as info:
        cli(WiderMask, ["--feather", "21"])
    assert str(info.value.code).startswith("error: --feather: ")
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--mode", "fuzzy"])
    # Each refusal names its own option, even where one name ends another.
    with pytest.raises(SystemExit) as info:
        cli(WiderMask, ["--max-size", "4096", "--size", "0"])
    message = str(info.value.code)
    assert message == (
        "error: --max-size: Input should be less than or equal to 2048; "
        "--size: Input should be greater than or equal to 1"
    )


# ---- what a hostile client can send: every number bounded and finite, booleans real ----


def every_pipeline_params() -> list[type[Params]]:
    import importlib
    import pkgutil

    import serve_app.pipelines as pkg

    specs = [
        getattr(importlib.import_module(f"serve_app.pipelines.{m.name}"), "SPEC", None)
        for m in pkgutil.iter_modules(pkg.__path__)
    ]
    return [s.params for s in specs if isinstance(s, PipelineSpec)]


def numeric(annotation) -> bool:
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(numeric(a) for a in typing.get_args(annotation) if a is not type(None))
    return annotation in (int, float)


def test_every_pipelines_numbers_have_both_bounds():
    found = every_pipeline_params()
    assert len(found) >= 5
    for params in found:
        for name, info in params.model_fields.items():
            if numeric(info.annotation):
                assert any(getattr(m, a, None) is not None for m in info.metadata for a in ("le", "lt")), (
                    f"{params.__name__}.{name} has no upper bound"
                )
                assert any(getattr(m, a, None) is not None for m in info.metadata for a in ("ge", "gt")), (
                    f"{params.__name__}.{name} has no lower bound"
                )


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "inf", "Infinity", "nan", "1e400"])
def test_infinite_and_nan_numbers_are_refused(value):
    with pytest.raises(ValidationError, match="finite number"):
        EXTRACT.params(min_face_size=value)
    with pytest.raises(ValidationError, match="finite number"):
        form_model(MASK.params)(expand=value)


def test_booleans_are_real_booleans_in_json_and_true_false_1_0_in_forms():
    assert MASK.params(include_hair=True).include_hair is True
    for bad in (1, 0, "true", "false", "1", "yes", "on", 1.0, [True]):
        with pytest.raises(ValidationError, match="include_hair\n  Input should be true or false"):
            MASK.params(include_hair=bad)
    form = form_model(MASK.params)
    for text, value in (("true", True), ("False", False), ("1", True), ("0", False), (" TRUE ", True)):
        assert form(include_hair=text).include_hair is value
    for bad in ("yes", "on", "t", "2", "-1", 1):
        with pytest.raises(ValidationError, match="true, false, 1 or 0"):
            form(include_hair=bad)
    # The form's value reaches the pipeline as a real boolean.
    assert from_form(MASK.params, form(include_hair="1")).include_hair is True
    # And a number is never a boolean.
    for bad in (True, False):
        with pytest.raises(ValidationError, match="a number, not true or false"):
            EXTRACT.params(min_face_size=bad)
        with pytest.raises(ValidationError, match="a number, not true or false"):
            MASK.params(max_size=bad)
    assert EXTRACT.params(min_face_size=0).min_face_size == 0.0
