"""One spec per pipeline: its parameters (a pydantic model whose `Field`s carry the
defaults, limits and help) and the models it calls (pipeline key -> model name in the
model tier). The HTTP form and the batch job's command-line options are both derived
from the parameters model, so a parameter is added, bounded or documented in one place.
No Ray, no FastAPI here.
"""

from __future__ import annotations

import argparse
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

# What a multipart form may say for a boolean (any case): forms carry every value as text.
FORM_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _is_a(annotation: Any, kinds: tuple[type, ...]) -> bool:
    """Whether a field's annotation is one of `kinds` (Optional unwrapped)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(a in kinds for a in typing.get_args(annotation))
    return annotation in kinds


class Params(BaseModel):
    """Base of every pipeline's parameters: immutable, unknown names refused, numbers
    finite (no inf or NaN; every numeric field also has an upper bound, checked by
    tests/unit/test_spec.py), booleans real booleans: true or false in JSON and in
    Python, never 1, "yes" or "on" (pydantic's lax mode would take those), and a number
    never true or false. Form models (form_model) take the strings true/false/1/0 for a
    boolean instead, the only way a form can say it."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    form_booleans: ClassVar[bool] = False

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name)
        if field is None or value is None:
            return value
        if _is_a(field.annotation, (int, float)) and not _is_a(field.annotation, (bool,)):
            if isinstance(value, bool):  # JSON true is not the number 1
                raise PydanticCustomError("number_type", "Input should be a number, not true or false")
            return value
        if not _is_a(field.annotation, (bool,)) or isinstance(value, bool):
            return value
        if cls.form_booleans:
            if isinstance(value, str) and value.strip().lower() in FORM_BOOLEANS:
                return FORM_BOOLEANS[value.strip().lower()]
            raise PydanticCustomError("bool_type", "Input should be true, false, 1 or 0")
        raise PydanticCustomError("bool_type", "Input should be true or false")


@dataclass(frozen=True)
class PipelineSpec:
    name: str  # the application name, e.g. "face_mask"
    params: type[Params]
    models: dict[str, str] = field(default_factory=dict)  # pipeline key -> model tier name


@functools.cache
def form_model(params: type[Params]) -> type[Params]:
    """`params` as a FastAPI form model (`Annotated[form_model(P), Form()]`): the same
    fields and limits, but other form fields (the image, `outputs`) are not refused."""
    return type(
        params.__name__ + "Form",
        (params,),
        {"model_config": ConfigDict(frozen=True, extra="ignore"), "form_booleans": True},
    )


def from_form(params: type[Params], form: BaseModel) -> Params:
    """The pipeline's parameters out of a form model (which may carry more fields)."""
    return params(**form.model_dump(include=set(params.model_fields)))


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as one readable line: `field: problem; field: problem`."""
    parts = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "form")]
        parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _option(name: str, prefix: str) -> str:
    return "--" + prefix + name.replace("_", "-")


def _arg_type(annotation: Any) -> tuple[Any, dict]:
    """argparse keywords for a field's annotation (Optional unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _arg_type(inner[0])
    if annotation is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        choices = typing.get_args(annotation)
        return None, {"choices": choices, "type": type(choices[0])}
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1]
        return None, {"nargs": "+", "type": item}
    if annotation in (int, float, str):
        return None, {"type": annotation}
    raise TypeError(f"no command-line form for a field of type {annotation!r}")


def _limits(info) -> str:
    words = []
    for meta in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                words.append(f"{sign} {getattr(meta, attr)}")
    return f" ({', '.join(words)})" if words else ""


def add_arguments(
    parser: argparse.ArgumentParser, model: type[BaseModel], prefix: str = "", skip: tuple[str, ...] = ()
) -> None:
    """One option per field of `model`: `--max-size`, help from the field's description,
    default and limits. Every option defaults to None (= the model's own default), so
    the model stays the only place a default lives."""
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        _, kwargs = _arg_type(info.annotation)
        default = info.get_default(call_default_factory=True)
        if kwargs.get("action") is argparse.BooleanOptionalAction and name.startswith("no_") and default is False:
            kwargs = {"action": "store_const", "const": True}  # --no-mask, never --no-no-mask
        shown = (
            "unset"
            if default is None
            else (",".join(map(str, default)) if isinstance(default, (list, tuple)) else default)
        )
        help_text = f"{info.description or name} [default: {shown}]{_limits(info)}"
        parser.add_argument(
            _option(name, prefix), dest=prefix.replace("-", "_") + name, default=None, help=help_text, **kwargs
        )


def from_arguments(model: type[BaseModel], args: argparse.Namespace, prefix: str = "", **extra: Any) -> Any:
    """The model built from the options `add_arguments` made (unset ones take the
    model's default); a bad value exits with one line naming the option."""
    dest_prefix = prefix.replace("-", "_")
    values = {
        name: getattr(args, dest_prefix + name)
        for name in model.model_fields
        if getattr(args, dest_prefix + name, None) is not None
    }
    try:
        return model(**values, **extra)
    except ValidationError as exc:
        # Each problem named by its option, from the error's own location (replacing
        # names in the text would turn `max_size:` into `--max---size:` when a field
        # `size` exists too).
        parts = []
        for e in exc.errors():
            loc = [str(x) for x in e.get("loc", ())]
            where = _option(loc[0], prefix) if loc and loc[0] in model.model_fields else ".".join(loc) or "options"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        raise SystemExit(f"error: {'; '.join(parts)}") from None
