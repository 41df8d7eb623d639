"""``docs/writing-a-driver.md``: its code is real.

* Each Python block runs on its own (its imports included), in an empty
  working directory.
* A Python block whose first line is ``# examples/...`` is an excerpt: it must
  be that file's text, verbatim, and compile.
* The TOML blocks are the example's entry points, as its ``pyproject.toml`` has them.
* The YAML block (RoadRunner's sample configuration) loads.
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from rrjobs import Config
from tests.test_example_plugin import ensure_example_installed

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "writing-a-driver.md"
EXCERPT = re.compile(r"^# (examples/\S+\.py)\n")


def blocks(lang: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.S | re.M)


def excerpts() -> list[tuple[str, str]]:
    out = []
    for block in blocks("python"):
        m = EXCERPT.match(block)
        if m:
            out.append((m.group(1), block[m.end():]))
    return out


def test_the_doc_covers_the_driver_contract() -> None:
    text = DOC.read_text(encoding="utf-8")
    for term in ("Constructor", "Driver", "BaseDriver", "Job", "Message", "Pipeline", "State",
                 "Capabilities", "rrjobs.drivers", "driver_from_config", "driver_from_pipeline",
                 "UnsupportedFeatureError", "PayloadTooLargeError", "ConfigError",
                 "driver_factory", "ConformanceSuite", "DriverFactory", "-m conformance",
                 # the kit
                 "PullDriver", "Settler", "Lane", "accept", "DriverConstructor", "Supervisor",
                 "Backoff", "FailureWindow", "request_restart", "Batcher", "rrjobs.core.delays",
                 "normalize_headers", "give_back", "poison_job", "SupervisedTaskTests", "-rs",
                 "lifecycle no-op rule"):
        assert term in text, f"the tutorial never mentions {term}"
    assert len(blocks("python")) >= 10


def test_every_method_of_the_example_driver_is_shown() -> None:
    """The tutorial walks through the whole driver: each of its methods is in an excerpt."""
    source = (ROOT / "examples/my_awesome_driver/src/my_awesome_driver/driver.py").read_text()
    shown = "".join(code for path, code in excerpts() if path.endswith("/driver.py"))
    for name in re.findall(r"^    (?:async )?def (\w+)", source, flags=re.M):
        assert f"def {name}(" in shown, f"the tutorial never shows Driver.{name}"


@pytest.mark.parametrize("path,code", excerpts(), ids=lambda v: str(v)[:60])
def test_excerpts_are_the_example_source_verbatim(path: str, code: str) -> None:
    source = (ROOT / path).read_text(encoding="utf-8")
    assert code in source, f"the excerpt of {path} differs from the file"
    compile(textwrap.dedent(code), path, "exec")


def test_the_toml_blocks_are_the_example_entry_points() -> None:
    project = tomllib.loads((ROOT / "examples/my_awesome_driver/pyproject.toml").read_text())
    groups = project["project"]["entry-points"]
    seen = set()
    for block in blocks("toml"):
        for group, doc in tomllib.loads(block)["project"]["entry-points"].items():
            assert doc == groups[group], f"the doc's {group} entry points differ"
            seen.add(group)
    assert seen == {"rrjobs.drivers", "rrjobs.bench"}
    assert groups["rrjobs.drivers"] == {"my_awesome_driver": "my_awesome_driver.plugin:Plugin"}


def test_the_yaml_block_loads() -> None:
    (block,) = blocks("yaml")
    config = Config.from_yaml(block)
    assert config.jobs.pipelines["test-1"].driver == "my_awesome_driver"
    assert config.jobs.consume == ["test-1"]


def test_the_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_example_installed()
    monkeypatch.chdir(tmp_path)
    snippets = [b for b in blocks("python") if not EXCERPT.match(b)]
    assert len(snippets) >= 6
    out = io.StringIO()
    defined: dict[str, object] = {}
    for i, code in enumerate(snippets):
        namespace: dict[str, object] = {"__name__": f"writing_a_driver_{i}"}
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{DOC.name}[snippet {i}]", "exec"), namespace)
        defined.update(namespace)
    printed = out.getvalue()
    assert "unknown driver 'no_such_driver'" in printed
    assert "header 'nested' has a nested value (dict)" in printed
    assert "jobs.pipelines.test-1.config.prefetch: must be ≥ 1" in printed
    assert "declare.test-3.prefech: unknown key" in printed
    assert "supports delays up to 900s, got 901s" in printed
    assert "exceeds driver 'sqs' maximum of 262144 bytes" in printed
    assert (tmp_path / ".rrjobs" / "my_awesome_driver" / "test-1").is_dir()
    suite = defined["TestMyAwesomeDriverConformance"]
    assert getattr(suite, "marker", None) == "my_awesome_driver"
    from rrjobs.testing.suite import SECTIONS

    assert set(SECTIONS) <= set(type.mro(suite))  # type: ignore[arg-type]
