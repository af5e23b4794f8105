"""Reports are Jinja2 templates: HTML autoescaped, every template shipped in the wheel's package data."""
import configparser
from pathlib import Path

from pamtri.pipeline.report import TEMPLATES, environment, render

REPO = Path(__file__).resolve().parents[2]


def test_html_templates_escape_what_data_puts_in_them_and_markdown_ones_do_not():
    env = environment()
    hostile = "<script>alert(1)</script>"
    assert "&lt;script&gt;" in env.from_string("{{ x }}").render(x=hostile)
    assert env.autoescape("demo_report.html") and not env.autoescape("demo_report.md")


def test_the_demo_report_templates_render_one_context_to_markdown_and_html():
    ctx = dict(run="r1", timings={"synth": 1.5}, budget_line="Budget 13.5 minutes.",
               synth=dict(ids=3, images_per_id=2, size=64, style="flat"),
               pck=dict(n_images=4, columns=["Wheel", "Mean"], values=["10.00", "n/a"]),
               reid=dict(columns=["variant", "mAP"], rows=[["a <b>", "12.34"]]),
               figures=dict(data=[{"alt": "d", "src": "data/p.png"}], pose=[], reid=[{"alt": "c", "src": "c.png"}]))
    md, html = render("demo_report.md", **ctx), render("demo_report.html", **ctx)
    assert "| Wheel | Mean |\n| ---: | ---: |\n| 10.00 | n/a |" in md
    assert "| a <b> | 12.34 |" in md and "![c](c.png)" in md
    assert "<td>a &lt;b&gt;</td>" in html and "src='c.png'" in html and "<td>1.5</td>" in html
    assert "Budget 13.5 minutes." in md and "<p>Budget 13.5 minutes.</p>" in html


def test_every_template_is_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    patterns = cfg["options.package_data"]["pamtri.pipeline"].split()
    for template in TEMPLATES.iterdir():
        assert any(template.relative_to(TEMPLATES.parent).match(p) for p in patterns), template
