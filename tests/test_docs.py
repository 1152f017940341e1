"""The documentation in docs/ is true: its runnable blocks run, its generated pages are current and
its links resolve.

Fenced blocks whose info string has the word ``run`` (```` ```python run ````, ```` ```bash run ````)
are executed, page by page, in order, in one fresh temporary folder per page; a block whose info
string has ``file=NAME`` (```` ```python file=chain_space.py ````) is written into that folder as
NAME for the blocks after it. Python blocks run in a subprocess with ``sys.executable`` (the folder
is on ``sys.path``), bash blocks with ``bash -e`` and the interpreter's ``bin`` folder first on PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from nasflow import docgen

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^(?P<indent>[ ]{0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                   re.M | re.S)
BLOCK_TIMEOUT = 120  # seconds; every block is meant to take a few


@dataclass(frozen=True)
class Block:
    lang: str
    run: bool
    file: str | None
    body: str
    line: int


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        words = m.group("info").split()
        lang = words[0] if words else ""
        file = next((w.partition("=")[2] for w in words[1:] if w.startswith("file=")), None)
        found.append(Block(lang, "run" in words[1:], file, m.group("body"), text.count("\n", 0, m.start()) + 1))
    return found


def runnable_pages() -> list[Path]:
    return [p for p in PAGES if any(b.run for b in blocks(p))]


def _env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["MPLBACKEND"] = "Agg"
    env.pop("PYTHONPATH", None)  # blocks say what they need (e.g. PYTHONPATH=. nasflow run ...)
    env["COLUMNS"] = "100"
    # The blocks are tiny: one thread is faster than torch's default pool, much faster on a busy machine.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run_block(block: Block, folder: Path, page: Path, index: int) -> None:
    where = f"{page.relative_to(ROOT)}:{block.line}"
    if block.lang == "python":
        script = folder / f"_doc_block_{index}.py"
        script.write_text(block.body, encoding="utf-8")
        command = [sys.executable, str(script)]
    elif block.lang in ("bash", "sh", "shell"):
        command = ["bash", "-e", "-c", block.body]
    else:
        pytest.fail(f"{where}: cannot run a '{block.lang}' block")
    done = subprocess.run(command, cwd=folder, env=_env(folder), capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT)
    if done.returncode != 0:
        pytest.fail(f"{where}: the block exited with {done.returncode}\n--- block ---\n{block.body}"
                    f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}")


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_runnable_blocks_run(page: Path, tmp_path: Path) -> None:
    for i, block in enumerate(blocks(page)):
        if block.file:
            target = tmp_path / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body, encoding="utf-8")
        if block.run:
            _run_block(block, tmp_path, page, i)


def test_some_blocks_are_runnable() -> None:
    """The harness finds the blocks (a typo in the info strings would silently skip them all)."""
    names = {p.relative_to(DOCS).as_posix() for p in runnable_pages()}
    assert {"quickstart.md", "tutorials/new-search-space.md", "tutorials/new-task.md"} <= names


def test_generated_references_are_current() -> None:
    stale = docgen.stale_pages(DOCS / "reference")
    assert not stale, f"stale: {[str(p) for p in stale]}; run: python -m nasflow.docgen"


def test_docgen_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal's width does not leak into the generated help text."""
    monkeypatch.setenv("COLUMNS", "40")
    narrow = docgen.render_cli()
    monkeypatch.setenv("COLUMNS", "250")
    assert docgen.render_cli() == narrow
    assert "nasflow import-ruas" in narrow  # plugin commands are included


def test_docgen_check_flags_a_stale_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert docgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert docgen.main(["--out", str(tmp_path)]) == 0
    assert docgen.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "config.md").write_text("old\n", encoding="utf-8")
    assert docgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert "config.md" in capsys.readouterr().err


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _without_code(text: str) -> str:
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    slugs = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _without_code(page.read_text(encoding="utf-8")), re.M):
        slugs.add(_slug(heading))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", page.read_text(encoding="utf-8"), re.M):
        slugs.add(_slug(heading))  # headings with code spans
    return slugs


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_relative_links_resolve(page: Path) -> None:
    text = _without_code(page.read_text(encoding="utf-8"))
    broken = []
    for m in LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = page if not path_part else (page.parent / unquote(path_part)).resolve()
        if not dest.exists():
            broken.append(f"{target} (no such file: {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading '#{anchor}' in {dest.name})")
        elif dest.is_relative_to(ROOT) is False:
            broken.append(f"{target} (outside the repository)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_every_page_is_reachable_from_the_index() -> None:
    reached, todo = set(), [DOCS / "index.md"]
    while todo:
        page = todo.pop()
        if page in reached or page.suffix != ".md" or not page.is_file():
            continue
        reached.add(page)
        for m in LINK.finditer(_without_code(page.read_text(encoding="utf-8"))):
            target = (m.group(1) or m.group(2)).partition("#")[0]
            if target and not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                todo.append((page.parent / unquote(target)).resolve())
    assert not set(PAGES) - reached, f"not linked from docs/index.md: {sorted(map(str, set(PAGES) - reached))}"


def test_readme_links_to_the_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/index.md" in readme


def _tables_by_heading(text: str) -> dict[str, list[str]]:
    """The first table under each heading (the heading's text, whatever its level): its lines."""
    tables: dict[str, list[str]] = {}
    heading, in_table = None, False
    for line in text.splitlines():
        if line.startswith("#"):
            heading, in_table = line.lstrip("#").strip(), False
        elif line.startswith("|") and heading is not None and (in_table or heading not in tables):
            tables.setdefault(heading, []).append(line.rstrip())
            in_table = True
        else:
            in_table = False  # the table ended: a later table under the same heading is not it
    return tables


RESULT_TABLES = [  # (committed benchmark result, the page that shows its tables, how many it must show)
    (ROOT / "benchmarks" / "results" / "pareto-default" / "table.md", DOCS / "search-matters.md", 2),
    (ROOT / "benchmarks" / "results" / "ablation-default" / "table.md", DOCS / "search-matters.md", 7),
]


@pytest.mark.parametrize("results, page, shown", RESULT_TABLES, ids=[r.parent.name for r, _, _ in RESULT_TABLES])
def test_tables_copied_into_a_page_are_the_committed_results(results: Path, page: Path, shown: int) -> None:
    """A page that shows a benchmark's tables shows the committed run's, not an older run's."""
    committed = _tables_by_heading(results.read_text())
    on_page = _tables_by_heading(page.read_text())
    same = [h for h in committed if h in on_page]
    assert len(same) >= shown, f"{page.name} shows {len(same)} of {results}'s tables, expected {shown}"
    for heading in same:
        assert on_page[heading] == committed[heading], f"{page.name}, '{heading}': not the table of {results}"
