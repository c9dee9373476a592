"""The results page: ``tables/index.html``, one static file beside the tables' figures that opens from
disk (no server, no network: its style and script are inline). It holds the leaderboard (sortable
by any column, filtered by task and scale), then every rendered table of the folder (each grid's
``<grid>.md`` in the paper's order, the claims ledger, then any other ``.md``) converted to HTML with
sortable tables, the provenance lines as they are, and the figures each one names. Written with the
tables by ``benchmark.render``; read nothing but the folder's own files.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from benchmark.results import store

PAGE = "index.html"

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 1.5em 4em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th.sorted-up::after { content: " ▲"; } th.sorted-down::after { content: " ▼"; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
nav a { margin-right: 1em; } .filters { margin: 1em 0; } .filters label { margin-right: 1.5em; }
code { background: #f5f5f5; padding: 0 3px; }
"""

_SCRIPT = """
function cellValue(row, column) {
  const text = row.children[column].innerText.replace(/[*✗†≡≈]/g, '').trim();
  const number = parseFloat(text.replace(/,/g, '').replace(/^\\+/, ''));
  return isNaN(number) ? text.toLowerCase() : number;
}
function sortBy(header) {
  const table = header.closest('table'), column = Array.from(header.parentNode.children).indexOf(header);
  const body = table.tBodies[0], rows = Array.from(body.rows);
  const up = !header.classList.contains('sorted-up');
  table.querySelectorAll('th').forEach(th => th.classList.remove('sorted-up', 'sorted-down'));
  header.classList.add(up ? 'sorted-up' : 'sorted-down');
  rows.sort((a, b) => {
    const x = cellValue(a, column), y = cellValue(b, column);
    if (typeof x === typeof y) { return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); }
    return typeof x === 'number' ? -1 : 1;              // numbers before text (e.g. "-")
  });
  rows.forEach(row => body.appendChild(row));
}
function applyFilters() {
  const task = document.getElementById('task').value, scale = document.getElementById('scale').value;
  document.querySelectorAll('[data-task]').forEach(element => {
    const tasks = element.dataset.task.split(' '), scales = element.dataset.scale.split(' ');
    element.hidden = !((task === '' || tasks.includes(task)) && (scale === '' || scales.includes(scale)));
  });
}
document.querySelectorAll('th').forEach(th => th.addEventListener('click', () => sortBy(th)));
document.getElementById('task').addEventListener('change', applyFilters);
document.getElementById('scale').addEventListener('change', applyFilters);
"""


def _inline(text: str) -> str:
    """Markdown inline marks of the rendered tables -> HTML (everything else escaped)."""
    text = html.escape(text, quote=False)
    text = text.replace("&lt;u&gt;", "<u>").replace("&lt;/u&gt;", "</u>")
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{_link(m.group(2))}">{m.group(1)}</a>', text)
    return text


def _link(target: str) -> str:
    """A link between the tables' files points inside the page (``claims.md#table-8`` -> ``#claims-table-8``)."""
    name, _, anchor = target.partition("#")
    if name.endswith(".md") and "/" not in name:
        return f"#{Path(name).stem}" + (f"-{anchor}" if anchor else "")
    return html.escape(target)


def markdown_to_html(text: str, name: str) -> str:
    """The rendered markdown of one file (headings, paragraphs, pipe tables, inline marks) as HTML;
    headings get ids ``<name>-<slug>`` so that links between the files work inside the page."""
    out, table = [], []

    def flush() -> None:
        if not table:
            return
        header = [c.strip() for c in table[0].strip().strip("|").split("|")]
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table[2:]]
        out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in header) + "</tr></thead><tbody>"
                   + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                   + "</tbody></table>")
        table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        heading = re.match(r"^(#+)\s+(.*)", line)
        if heading:
            level = min(len(heading.group(1)) + 1, 4)             # the page's own title is the only h1
            slug = re.sub(r"[^a-z0-9]+", "-", heading.group(2).lower()).strip("-")
            anchor = name if level == 2 else f"{name}-{slug}"
            out.append(f'<h{level} id="{anchor}">{_inline(heading.group(2))}</h{level}>')
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "\n".join(out)


def _figures(text: str, folder: Path) -> list[str]:
    """The figures a table names (``<name>.png`` in its text) that exist beside it, in order."""
    return [n for n in dict.fromkeys(re.findall(r"([\w.-]+\.png)", text)) if (folder / n).is_file()]


def write_page(out_dir, leaderboard_rows: list[dict], order: list[str]) -> Path:
    """``<out_dir>/index.html`` from the folder's ``.md`` files (``order``: grid names first, in
    this order) and the leaderboard's rows; returns its path."""
    folder = Path(out_dir)
    files = {p.stem: p for p in sorted(folder.glob("*.md"))}
    names = [n for n in order if n in files] + (["claims"] if "claims" in files else []) \
        + [n for n in files if n not in order and n != "claims"]
    tasks = sorted({r["task"] for r in leaderboard_rows})
    scales = sorted({r["scale"] for r in leaderboard_rows})
    by_grid: dict[str, dict[str, set]] = {}
    for r in leaderboard_rows:
        entry = by_grid.setdefault(r["grid"], {"task": set(), "scale": set()})
        entry["task"].add(r["task"])
        entry["scale"].add(r["scale"])
    columns = ["grid", "table", "scale", "task", "row", "seeds", "psnr", "ssim", "rmse", "gain_db", "delta_psnr",
               "delta_low", "delta_high", "p_holm", "marks", "params_m", "macs_g", "commit"]

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e-3 and value else f"{value:.4f}".rstrip("0").rstrip(".")
        return html.escape(str(value))
    board = ("<table id=\"leaderboard\"><thead><tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr></thead><tbody>"
             + "".join(f'<tr data-task="{html.escape(r["task"])}" data-scale="{html.escape(r["scale"])}">'
                       + "".join(f"<td>{cell(r[c])}</td>" for c in columns) + "</tr>" for r in leaderboard_rows)
             + "</tbody></table>")
    sections = []
    for name in names:
        text = files[name].read_text()
        attributes = ""
        if name in by_grid:
            attributes = (f' data-task="{" ".join(sorted(by_grid[name]["task"]))}" '
                          f'data-scale="{" ".join(sorted(by_grid[name]["scale"]))}"')
        figures = "".join(f'<figure><img src="{html.escape(f)}" alt="{html.escape(f)}" loading="eager"></figure>'
                          for f in _figures(text, folder))
        sections.append(f'<section{attributes}>{markdown_to_html(text, name)}{figures}</section>')
    options = lambda values: "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)  # noqa: E731
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medir-bench results</title><style>{_STYLE}</style></head>
<body>
<h1>medir-bench results</h1>
<nav>{"".join(f'<a href="#{n}">{html.escape(n)}</a>' for n in names)}</nav>
<div class="filters"><label>task <select id="task"><option value="">all</option>{options(tasks)}</select></label>
<label>scale <select id="scale"><option value="">all</option>{options(scales)}</select></label></div>
<h2 id="leaderboard-section">Leaderboard</h2>
<p>One row per grid, row and task (<code>leaderboard.csv</code>, <code>leaderboard.json</code>); click a column to sort.</p>
{board}
{"".join(sections)}
<script>{_SCRIPT}</script>
</body></html>
"""
    path = folder / PAGE
    store.write_text(path, page)
    return path
