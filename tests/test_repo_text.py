"""The repository speaks of the project as it is: no paths outside it, no issue numbers, no
narration of how it got here (which earlier run or code measured what). The README fits a
screen's worth of reading, and the docs it links to exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXT = ("*.md", "*.py", "*.toml", "*.yml", "*.cfg", "*.txt", "*.html", "*.js", "*.css", "Makefile", "run")
SKIP = {"node_modules", ".venv", "site", ".git", "__pycache__", ".pytest_cache"}
FORBIDDEN = {
    "a path outside the repository": r"\.\./shared|/work/|/tmp/shared",
    "an issue number": r"\bissues? ?#\s?\d+|\bthe issue(?:'s)?\b",
    "history narration": r"\b(?:earlier|previous|this|last) session\b|\bon the current code\b|"
                         r"\bearlier (?:code|measurements?)\b|\bmeasured earlier\b|\bwhat was then\b",
}


def _files() -> list[Path]:
    """The repository's text files: what git tracks or would add (not what it ignores: a user's runs/
    after `make demo`, the virtualenv), or every file but SKIP's folders where git is not there."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")
        candidates = [REPO / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):
        candidates = [p for p in REPO.rglob("*") if not SKIP & set(p.relative_to(REPO).parts)]
    return sorted({p for p in candidates if p.is_file() and p.name != Path(__file__).name
                   and any(p.match(pattern) for pattern in TEXT)})


def test_the_text_is_about_the_project_as_it_is():
    files = _files()
    assert any(f.name == "README.md" for f in files) and len(files) > 50  # the walk found the repository
    problems = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for what, pattern in FORBIDDEN.items():
            for m in re.finditer(pattern, text, flags=re.IGNORECASE):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{path.relative_to(REPO)}:{line}: {what}: {m.group(0)!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("pattern,example", [(p, e) for p, e in zip(FORBIDDEN.values(), (
    "see ../shared/datasets/x", "fixed in issue #12", "measured on the current code"))])
def test_the_patterns_catch_what_they_name(pattern, example):
    assert re.search(pattern, example, flags=re.IGNORECASE)


def test_the_readme_is_short_and_its_links_exist():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    first = readme.splitlines()[:5]
    assert any("make demo" in line for line in first) and any("make test" in line for line in first)
    links = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", readme)
    assert links, "the README links into the docs"
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, missing
