"""HTML and Markdown reports rendered from the templates in ``pipeline/templates`` with Jinja2.

Every page pamtri writes (the demo report, the MTMC report, the service's page) is a template here: HTML
templates are autoescaped, so a name or path taken from data can never inject markup.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def environment():
    """The one Jinja2 environment: templates from ``pipeline/templates``, autoescaping every .html template."""
    import jinja2
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                              autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                                                  default_for_string=True),
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context) -> str:
    """The text of ``template`` (a file name under pipeline/templates) rendered with ``context``."""
    return environment().get_template(template).render(**context)
