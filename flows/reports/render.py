"""HTML of the dashboard and of a latent page: one Jinja template each, shared by the static export and
the server, with the page's data embedded as JSON that the shared scripts (static/*.js) render.

Library choice: Plotly for every chart (its Python package ships plotly.min.js, so the charts work
offline and on air-gapped clusters with nothing fetched) and Tabulator for the latent table (MIT,
maintained, sorting, header filters and a virtual DOM that keeps 4096+ rows fast; one vendored file
because no PyPI package ships a non-module build of a grid library: itables' DataTables bundle is an
ES module, which browsers refuse to load from file://).
"""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

import plotly
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).parent
STATIC = HERE / "static"
ASSETS = {
    "plotly.min.js": Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
    "tabulator.min.js": STATIC / "vendor" / "tabulator.min.js",
    "tabulator_simple.min.css": STATIC / "vendor" / "tabulator_simple.min.css",
    "LICENSE.tabulator": STATIC / "vendor" / "LICENSE.tabulator",
    "common.js": STATIC / "common.js",
    "index.js": STATIC / "index.js",
    "latent.js": STATIC / "latent.js",
    "atlas.css": STATIC / "atlas.css",
}
"""Every file the pages load, by the name they load it under (the server serves exactly these)."""


@cache
def _env() -> Environment:
    # autoescape: every {{ value }} is HTML-escaped; only the JSON block is marked safe (script_json).
    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


def script_json(data: object) -> str:
    """JSON that is safe inside <script type="application/json">: `<`, `>` and `&` as \\u escapes, so no
    corpus text can close the script element; JSON.parse turns them back into the characters."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def index_html(data: dict, assets: str, suffix: str, texts: str = "explanations.js") -> str:
    """The dashboard; `assets`: URL prefix of ASSETS, `suffix`: ".html" (static) or "" (served) on latent
    links, `texts`: URL of the full explanation texts (texts_js), loaded when the search is first used."""
    return _env().get_template("index.html").render(data_json=script_json(data), assets=assets, suffix=suffix,
                                                    texts=texts)


def texts_js(texts: list[str]) -> str:
    """The full explanation texts as a script (a script, not JSON fetched: fetch is refused on file://)."""
    return f"window.ATLAS_TEXT = {script_json(texts)};\n"


def latent_html(view: dict, assets: str, suffix: str, index_href: str) -> str:
    """A latent's page (latent_view.py's dict embedded)."""
    return _env().get_template("latent.html").render(
        data_json=script_json(view), assets=assets, suffix=suffix, index_href=index_href,
        latent=view["latent"], sae_id=view["sae_id"])


def copy_assets(directory: Path) -> None:
    """Write ASSETS into `directory` once (a file of the same size is left alone)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in ASSETS.items():
        target = directory / name
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copyfile(source, target)
