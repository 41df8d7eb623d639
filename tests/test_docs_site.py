"""The documentation site's generated pages and its navigation.

(``make docs`` builds the whole site with ``mkdocs build --strict``; ``make
test`` runs it. These tests check what the generator produces, quickly.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from rrjobs.config import JobsConfig

ROOT = Path(__file__).resolve().parents[1]


def hooks() -> Any:
    path = ROOT / "tools" / "mkdocs_hooks.py"
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mkdocs_hooks"] = module
    spec.loader.exec_module(module)
    return module


def keys(model: type[BaseModel], prefix: str) -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}"
        out.append(path)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += keys(ann, path)
    return out


def test_the_config_reference_has_every_key_of_the_models() -> None:
    text = hooks().config_reference()
    for key in keys(JobsConfig, "jobs"):
        assert f"`{key}`" in text, key
    # a map of models is walked too, and durations and constraints are named
    assert "| `jobs.pipelines.<name>.retry.backoff` | duration | `1.0` | ≥ 0 |" in text
    assert "| `jobs.pipelines.<name>.driver` | str | **required** | not empty |" in text


def test_every_driver_with_options_has_its_section_and_descriptions() -> None:
    h = hooks()
    text = h.config_reference()
    drivers = [name for name, _ in h.driver_models()]
    assert {"memory", "sqlite", "amqp", "kafka", "nats", "sqs", "pubsub"} <= set(drivers)
    for name, models in h.driver_models():
        assert f"### `{name}`" in text
        assert any(m.__name__.endswith("Options") for m in models), name
    # descriptions come from the models' Attributes: docstrings
    assert ("| `jobs.pipelines.<name>.config.prefetch` | int | `100000` | how many of the "
            "pipeline's jobs may be in the priority queue or in a handler at once.") in text
    assert "| `amqp.addr` | str (secret) | `\"amqp://guest:guest@127.0.0.1:5672/\"` |" in text


def test_the_marker_is_replaced_and_other_pages_are_untouched() -> None:
    h = hooks()
    page = (ROOT / "docs" / "reference" / "config.md").read_text(encoding="utf-8")
    assert h.MARKER in page
    out = h.on_page_markdown(page, None, None, None)
    assert h.MARKER not in out and "`jobs.pool.num_workers`" in out
    assert h.on_page_markdown("# x\n", None, None, None) == "# x\n"


def test_every_page_is_in_the_navigation() -> None:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *a: None)
    nav = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader)["nav"]

    def pages(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [p for n in node for p in pages(n)]
        return [p for v in node.values() for p in pages(v)]

    listed = set(pages(nav))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk == listed
