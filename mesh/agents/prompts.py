"""System prompts, rendered from the Jinja2 templates beside this module.

Templates live in files so that they can be read, diffed and replaced
without touching code; ``prompt_templates=`` on an agent takes a custom one.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jinja2

__all__ = ["render_prompt"]


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def _load(name: str) -> str:
    return resources.files("mesh.agents").joinpath("prompts", name).read_text(encoding="utf-8")


def render_prompt(template_name: str, custom_template: str | None = None, **values: Any) -> str:
    env = _environment()
    template = (
        env.from_string(custom_template) if custom_template else env.get_template(template_name)
    )
    return template.render(**values).strip() + "\n"
