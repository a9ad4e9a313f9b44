"""README.md's two set-up-and-go commands are the ones the project runs."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bash_blocks(text):
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def _readme_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    head = text.split("## What you get")[0]
    return _bash_blocks(head)


def test_readme_has_exactly_two_set_up_and_go_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "scripts/explain.py" in main_job and "requirements.txt" in main_job
    assert "pytest" in tests and "requirements-test.txt" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _readme_commands()
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert tests in ci.splitlines()


def _python_blocks(section=None):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    if section is not None:
        text = text.split(section, 1)[1].split("\n## ", 1)[0]
    return [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)]


def test_readme_uses_one_python_form():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    bare = [line for line in text.splitlines()
            if re.search(r"(^|[\s`(])python (scripts|-m)", line) and ".venv/bin/python" not in line]
    assert bare == []


def test_every_readme_python_block_is_valid_python():
    blocks = _python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        compile(block, "README.md", "exec")


def test_readme_api_example_runs_on_the_shipped_demo(tmp_path, monkeypatch):
    """Executes the README's "Using it from Python" blocks as written (a shorter search)."""
    import json

    import sce_jax

    def short_search_config():
        config = sce_jax.search.config.default_search_config()
        config.steps = 3
        config.smoothing.num_samples = 2
        return config

    monkeypatch.setattr(sce_jax, "default_search_config", short_search_config)
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks("## Using it from Python")
    assert blocks
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.image.shape == (3, 2, 32, 32, 1)
    assert result.target.tolist() == [3, 4, 7]   # Dress, Coat, Sneaker
    with open(tmp_path / "runs" / "api_demo" / "manifest.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["goal"] for r in records[::2]] == ["reach Dress", "reach Coat", "reach Sneaker"]
    assert (tmp_path / "runs" / "api_demo" / "report.html").is_file()
    assert (tmp_path / "runs" / "api_demo" / "results.csv").is_file()
    assert (tmp_path / "runs" / "api_demo" / records[0]["files"]["mask"]).is_file()


WORKSPACE_MAX_LINES = 450


def _text(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def _docs_cited(text):
    return sorted(set(re.findall(r"docs/[\w./-]+\.md", text)))


def test_workspace_is_a_short_guide():
    lines = _text("WORKSPACE.md").splitlines()
    assert len(lines) <= WORKSPACE_MAX_LINES, (
        f"WORKSPACE.md has {len(lines)} lines; move reference material into docs/")


def test_every_docs_file_cited_exists():
    for name in ("WORKSPACE.md", "README.md"):
        cited = _docs_cited(_text(name))
        missing = [p for p in cited if not os.path.isfile(os.path.join(ROOT, p))]
        assert missing == [], f"{name} cites {missing}"
    assert _docs_cited(_text("WORKSPACE.md")), "WORKSPACE.md links to no docs/ file"


def test_every_docs_page_is_linked_from_the_guide():
    pages = sorted(f"docs/{n}" for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md"))
    assert sorted(set(pages) - set(_docs_cited(_text("WORKSPACE.md")))) == []


def test_docs_pages_link_to_pages_that_exist():
    docs = os.path.join(ROOT, "docs")
    for name in sorted(os.listdir(docs)):
        if not name.endswith(".md"):
            continue
        links = re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", _text(os.path.join("docs", name)))
        missing = [link for link in links if not os.path.isfile(os.path.join(docs, link))]
        assert missing == [], f"docs/{name} links to {missing}"
