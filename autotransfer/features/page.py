"""The shell shared by the reports: one self-contained HTML page (inline style, images as data URIs,
a Content-Security-Policy that forbids fetching anything) and the same tables in Markdown."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import __version__

# nothing may load from anywhere but the page itself: the report is safe to forward and open offline
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1180px; margin: 0 auto; padding: 0 24px 48px; }
header { border-bottom: 2px solid #1f77b4; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 24px 0 4px; } h2 { font-size: 20px; margin: 32px 0 8px; }
h3 { font-size: 16px; margin: 20px 0 6px; }
.sub { color: #555; margin: 0 0 12px; }
nav { font-size: 13px; margin: 8px 0 0; } nav a { margin-right: 12px; color: #1f77b4; text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 22px; } .card span { color: #555; font-size: 13px; }
.verdict { border-left: 5px solid #2ca02c; background: #f2faf2; padding: 10px 14px; }
.verdict.bad { border-color: #d62728; background: #fdf2f2; }
.verdict.unknown { border-color: #999; background: #f6f6f6; }
.note { color: #555; font-style: italic; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f4f6f8; } tr:nth-child(even) td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 12px; word-break: break-all; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
footer { margin-top: 40px; color: #777; font-size: 12px; }
"""

# the page checks its own images once loaded: a broken one is a console error (the tests watch for it)
SELF_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute("data-images-loaded", String(images.length - broken.length));
  if (broken.length) { console.error("report: " + broken.length + " image(s) failed to load"); }
});
"""


@dataclass
class Section:
    id: str
    title: str
    html: str
    markdown: str = ""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers as people read them: floats to ``digits`` places, missing values as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.2e}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(
    rows: Sequence[dict],
    columns: Sequence[str],
    *,
    headers: Sequence[str] | None = None,
    code: Sequence[str] = (),
    digits: dict[str, int] | None = None,
) -> str:
    """An HTML table of ``rows`` (dicts) over ``columns``; ``code`` columns render monospaced,
    ``digits`` overrides the decimals of some columns."""
    digits = digits or {}
    head = "".join(f"<th>{esc(h)}</th>" for h in (headers or columns))
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            text = esc(fmt(value, digits.get(column, 4)))
            if column in code and value not in (None, ""):
                text = f"<code>{text}</code>"
            cells.append(f'<td class="num">{text}</td>' if _is_number(value) else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def md_table(
    rows: Sequence[dict],
    columns: Sequence[str],
    *,
    headers: Sequence[str] | None = None,
    digits: dict[str, int] | None = None,
) -> str:
    digits = digits or {}

    def cell(row: dict, column: str) -> str:
        return fmt(row.get(column), digits.get(column, 4)).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers or columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row, c) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def image(uri: str, alt: str) -> str:
    return f'<img src="{esc(uri)}" alt="{esc(alt)}">'


def cards(items: Sequence[tuple[str, Any]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{esc(fmt(value))}</b><span>{esc(label)}</span></div>'
            for label, value in items
        )
        + "</div>"
    )


def render(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>\n{s.html}</section>' for s in sections
    )
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{STYLE}</style></head>
<body><header><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p><nav>{nav}</nav></header>
{body}
<footer>autotransfer {esc(__version__)}, {esc(stamp)}.
Self-contained: nothing on this page is fetched from the network.</footer>
<script>{SELF_CHECK}</script>
</body></html>
"""


def render_markdown(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    parts = [f"# {title}", "", subtitle, ""]
    for s in sections:
        parts += [f"## {s.title}", "", s.markdown.strip() or "(see the HTML report)", ""]
    return "\n".join(parts)
