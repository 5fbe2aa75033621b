"""The seed tools' spellings of a job's options, for every job in one place.

The seed scripts spell options with underscores (`--n_augmentations 3`) and give
booleans as 1/0 (`--remove_mouth 1`, `--bg_white 0`) or as a bare flag (`--keep_pose`,
`--no_mask`). A job's parser (JobParser, the runner's parser class for every job) keeps
FaceGraph's spelling as its only option strings and respells the seed's forms before
argparse sees them, so a seed command line works with only its program name changed:

  --n_augmentations 3     -> --n-augmentations 3     (any option of the job)
  --remove_mouth 1        -> --remove-mouth          (1/0, true/false, any case)
  --bg_white 0            -> --no-bg-white           (an on/off option turned off)
  --no_mask 1, --no_mask  -> --no-mask               (a flag that can only be on)
  --no_crop 0             -> (nothing: the flag's off default)

A token that names no option of the job is left as given, so argparse's error shows
what was typed. `--help` lists FaceGraph's spelling and names each alias once.
"""

from __future__ import annotations

import argparse
import sys

from serve_app.config.spec import FORM_BOOLEANS

# The same words a multipart form may use for a boolean (serve_app/config/spec.py).
BOOLEAN_WORDS = FORM_BOOLEANS

NOTE = (
    "Seed spellings: every option also answers to the underscore spelling shown beside it, and every "
    "on/off option takes 1 or 0 (true or false) or stands alone for on."
)


def is_switch(action: argparse.Action) -> bool:
    """An option that takes no value and sets a boolean: store_true/store_false, a
    store_const of True, --x/--no-x (help and count options are not)."""
    return action.nargs == 0 and (isinstance(action, argparse.BooleanOptionalAction) or isinstance(action.const, bool))


def underscored(option: str) -> str:
    return "--" + option[2:].replace("-", "_")


def _negative(action: argparse.Action, option: str) -> bool:
    """Whether `option` is the --no-x half of a --x/--no-x pair."""
    return isinstance(action, argparse.BooleanOptionalAction) and option != action.option_strings[0]


class JobParser(argparse.ArgumentParser):
    """An argparse parser that also takes the seed tools' spellings (module docstring)."""

    def parse_known_args(self, args=None, namespace=None):
        args = self.respell(list(sys.argv[1:] if args is None else args))
        return super().parse_known_args(args, namespace)

    def respell(self, argv: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(argv):
            token = argv[i]
            i += 1
            if token == "--":
                out += argv[i - 1 :]
                break
            name, eq, value = token.partition("=")
            option = "--" + name[2:].replace("_", "-") if name.startswith("--") else name
            action = self._option_string_actions.get(option)
            if action is None:
                out.append(token)
                continue
            if not is_switch(action):
                out.append(option + eq + value)
                continue
            word = value if eq else None
            if not eq and i < len(argv) and not argv[i].startswith("-"):
                word = argv[i]  # the seed's `--remove_mouth 1`: a switch's value is the next word
                i += 1
            out += self._switch(action, option, word)
        return out

    def _switch(self, action: argparse.Action, option: str, word: str | None) -> list[str]:
        if word is None:
            on = True
        elif word.strip().lower() in BOOLEAN_WORDS:
            on = BOOLEAN_WORDS[word.strip().lower()]
        else:
            self.error(f"argument {option}: takes 1 or 0 (true or false), or no value; not {word!r}")
        if isinstance(action, argparse.BooleanOptionalAction):
            positive, negative = action.option_strings[0], action.option_strings[1]
            want = on != _negative(action, option)
            return [positive if want else negative]
        return [option] if on else []  # a flag that is off unless given: off is its default


class JobHelpFormatter(argparse.HelpFormatter):
    """FaceGraph's spelling of each option, then its seed alias once:
    `--n-augmentations N  (or --n_augmentations)`, `--keep-pose, --no-keep-pose  (or --keep_pose 1|0)`."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        text = super()._format_action_invocation(action)
        longs = [o for o in action.option_strings if o.startswith("--") and not _negative(action, o)]
        if not longs:
            return text
        alias = underscored(longs[0])
        if is_switch(action):
            return f"{text}  (or {alias} 1|0)"
        return f"{text}  (or {alias})" if alias != longs[0] else text
