"""The option glossary of docs/api.md, checked against the code (and rewritten by `--update`).

Every keyword of every public function is one row: its name, its one meaning (written by
hand in docs/api.md) and the functions that take it (read from the signatures). Renamed
spellings that still work, with a DeprecationWarning, are a second table. The test
tests/test_glossary.py fails when the tables and the code disagree; `python docs/glossary.py
--update` rewrites the "used by" columns and the renames table, keeping every meaning, and
leaves `TODO` for a new option's meaning.
"""

import inspect
import re
import sys
from collections import defaultdict
from pathlib import Path

API_PAGE = Path(__file__).with_name("api.md")
START, END = "<!-- glossary:start -->", "<!-- glossary:end -->"
ROW = re.compile(r"^\| `([a-z_0-9]+)` \| (.*) \| (.*) \|$")
SKIPPED_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def public_functions() -> dict:
    """Name -> function for every public function of `lens_inversion` (classes left out)."""
    import lens_inversion as li

    found = {}
    for name in sorted(li.__all__):
        obj = getattr(li, name)
        if callable(obj) and not inspect.isclass(obj):
            found[name] = obj
    return found


def option_users() -> dict[str, list[str]]:
    """Option name -> the public functions that take it, from the signatures."""
    users = defaultdict(list)
    for name, function in public_functions().items():
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind not in SKIPPED_KINDS:
                users[parameter.name].append(name)
    return dict(users)


def renamed_spellings() -> dict[tuple[str, str], list[str]]:
    """(old, new) -> the public functions that still accept the old spelling."""
    renames = defaultdict(list)
    for name, function in public_functions().items():
        for old, new in getattr(function, "__renamed_options__", {}).items():
            renames[(old, new)].append(name)
    return dict(renames)


def read_tables(text: str) -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str], str]]:
    """The glossary rows (name -> (meaning, used by)) and renames rows ((old, new) -> used by) of the page."""
    block = text.split(START, 1)[1].split(END, 1)[0]
    options, renames = {}, {}
    for line in block.splitlines():
        match = ROW.match(line.strip())
        if not match:
            continue
        name, middle, last = match.groups()
        new = re.fullmatch(r"`([a-z_0-9]+)`", middle.strip())
        if new:
            renames[(name, new.group(1))] = last.strip()
        else:
            options[name] = (middle.strip(), last.strip())
    return options, renames


def used_by(functions: list[str]) -> str:
    """The "used by" cell: function names in backticks, sorted."""
    return ", ".join(f"`{f}`" for f in sorted(functions))


def render(meanings: dict[str, str]) -> str:
    """The two tables for the current code, with `meanings` (TODO where one is missing)."""
    lines = [START, "", "| Option | Meaning | Used by |", "| --- | --- | --- |"]
    for name, functions in sorted(option_users().items()):
        lines.append(f"| `{name}` | {meanings.get(name, 'TODO')} | {used_by(functions)} |")
    renames = renamed_spellings()
    if renames:
        lines += ["", "Old spellings that still work until 0.3, with a `DeprecationWarning` naming the new one:", "",
                  "| Old | New | Accepted by |", "| --- | --- | --- |"]
        for (old, new), functions in sorted(renames.items()):
            lines.append(f"| `{old}` | `{new}` | {used_by(functions)} |")
    return "\n".join([*lines, "", END])


def update() -> None:
    """Rewrite the tables in docs/api.md from the code, keeping the hand-written meanings."""
    text = API_PAGE.read_text(encoding="utf-8")
    options, _ = read_tables(text)
    meanings = {name: meaning for name, (meaning, _) in options.items()}
    head, rest = text.split(START, 1)
    API_PAGE.write_text(head + render(meanings) + rest.split(END, 1)[1], encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python docs/glossary.py --update")
    update()
