"""The option glossary in docs/api.md matches the code: one row per option, one meaning each."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
import glossary  # noqa: E402


@pytest.fixture(scope="module")
def tables():
    return glossary.read_tables(glossary.API_PAGE.read_text(encoding="utf-8"))


def test_every_option_has_one_row_and_no_row_is_stale(tables):
    options, _ = tables
    code = glossary.option_users()
    assert sorted(set(code) - set(options)) == [], "options missing from the glossary (python docs/glossary.py --update)"
    assert sorted(set(options) - set(code)) == [], "glossary rows no public function takes"


def test_used_by_columns_name_the_functions_that_take_each_option(tables):
    options, _ = tables
    for name, functions in glossary.option_users().items():
        assert options[name][1] == glossary.used_by(functions), name


def test_every_meaning_is_written(tables):
    options, _ = tables
    unwritten = [name for name, (meaning, _) in options.items() if not meaning or "TODO" in meaning]
    assert unwritten == []


def test_old_spellings_table_matches_the_deprecation_wrappers(tables):
    _, renames = tables
    code = {key: glossary.used_by(functions) for key, functions in glossary.renamed_spellings().items()}
    assert renames == code
