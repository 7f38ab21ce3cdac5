"""One self-contained HTML page from the artefacts of a run folder.

The page has no network dependency: figures are embedded as base64 PNG, the
CSS is inline, there is no JavaScript. Every section is optional: when its
artefact is missing the section says so instead of failing.

Run-folder layout
-----------------
``featuremass demo`` writes this layout; any other tool may write parts of it::

    RUN/
      dataset.json         dataset summary: {"root", "npix", "simulated", "splits": {split: n},
                           "target": {"mean", "std", "min", "median", "max"}, "config": {...}}
      commands.json        {"commands": [{"step", "command"}], "versions": {package: version},
                           "machine": str, "date": str, "seconds": {step: float}}
      metrics.json         {model label: featuremass.models.metrics.regression_report(...)}
                           on the test split; optional "coverage": {"68": f, "95": f}
                           inside a model's entry
      predictions.parquet  galaxy_id, ml_true, ml_pred_<label> per model
                           (optional ml_lo_<label> / ml_hi_<label> interval bounds)
      features/test.parquet  test-split feature table (the gallery's key features)
      importance/*.csv     importance tables (first columns: feature, value...)
      importance/*.png     importance figures
      figures/*.png        any other figures (true vs predicted, residuals...)
      benchmark.json       {"rows": [{"model", "npix", "n_train", "inputs", "rmse",
                           "rmse_ci": [lo, hi], "r2", "r2_ci", "seconds"}], "command", ...}
      gallery/stamps.npy   optional stamps (n, npix, npix) with gallery/ids.npy; otherwise
                           stamps are read from the test split of dataset.json's "root"

Build it with ``featuremass report --run RUN`` or :func:`build_report`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from featuremass._version import __version__
from featuremass.errors import FeaturemassError

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
#: Section ids, in page order (tests check each is present).
SECTIONS = (
    ("metrics", "Metrics on the test set"),
    ("predictions", "True vs predicted M/L"),
    ("importance", "Feature importance"),
    ("cnn", "CNN vs classical features"),
    ("gallery", "Example galaxies"),
    ("dataset", "Dataset"),
    ("provenance", "Commands and versions"),
)
#: Features shown on gallery cards when no importance ranking is available.
PREFERRED_FEATURES = ("gini", "m20", "concentration", "asymmetry", "sersic_n", "r50",
                      "smoothness", "bulge_to_total")
_GALLERY_EACH = 4

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;
background:#f6f7f9;color:#1d232b;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:1.5rem 2rem 4rem}
header{background:#1f3b57;color:#fff;padding:1.4rem 2rem}
header h1{margin:0;font-size:1.6rem} header p{margin:.3rem 0 0;opacity:.85}
nav{background:#e6ebf1;padding:.5rem 2rem;font-size:.92rem}
nav a{margin-right:1rem;color:#1f3b57;text-decoration:none}
section{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:1rem 1.4rem;margin:1.2rem 0}
h2{margin-top:.2rem;font-size:1.25rem;color:#1f3b57}
h3{font-size:1.02rem;margin:1rem 0 .4rem}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}
th,td{border-bottom:1px solid #e3e7ec;padding:.3rem .6rem;text-align:right}
th{background:#f0f3f6} td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:1rem}
.figs figure{margin:0;flex:1 1 520px;max-width:580px} figure{margin:0;max-width:100%} figure img{max-width:100%;height:auto;border:1px solid #e3e7ec}
figcaption{font-size:.82rem;color:#555}
.missing{color:#8a5a00;background:#fff6e0;padding:.5rem .8rem;border-radius:4px}
.note{color:#555;font-size:.88rem}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:.8rem}
.card{border:1px solid #dde3ea;border-radius:6px;padding:.4rem;font-size:.78rem;background:#fafbfc}
.card img{width:100%;image-rendering:pixelated;border-radius:3px}
.card .tag{font-weight:600} .best{color:#1a7f37} .worst{color:#b42318} .typical{color:#555}
.card table{font-size:.74rem;margin:.2rem 0;width:100%} .card td{padding:.1rem .2rem}
pre{background:#f0f3f6;padding:.6rem;border-radius:4px;overflow-x:auto;font-size:.82rem}
"""


# --------------------------------------------------------------------------- helpers


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("skipping unreadable %s: %s", path, exc)
        return None


def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img_tag(data: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{int(width)}"' if width else ""
    return f'<img src="{_png_data_uri(data)}" alt="{_esc(alt)}"{w}>'


def _figure_file(path: Path) -> str:
    caption = path.stem.replace("_", " ")
    return (f"<figure>{_img_tag(path.read_bytes(), caption)}"
            f"<figcaption>{_esc(path.name)}</figcaption></figure>")


def _fig_to_png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _missing(what: str) -> str:
    return f'<p class="missing">Not available: {_esc(what)}</p>'


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return _esc(x)
    if not math.isfinite(x):
        return "–"
    return f"{x:.{digits}f}"


def _entry_text(entry, digits: int = 3) -> str:
    """``0.912 [0.890, 0.934]`` for ``{"value", "ci95"}``, or a bare number."""
    if isinstance(entry, dict) and "value" in entry:
        ci = entry.get("ci95") or entry.get("ci")
        if ci and len(ci) == 2:
            return f"{_fmt(entry['value'], digits)} <span class=note>[{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]</span>"
        return _fmt(entry["value"], digits)
    if isinstance(entry, (int, float)):
        return _fmt(entry, digits)
    return "–"


def _table(df: pd.DataFrame, *, digits: int = 3, max_rows: int = 40) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    rows = []
    for _, row in df.head(max_rows).iterrows():
        cells = []
        for v in row.tolist():
            if isinstance(v, (float, np.floating)):
                cells.append(f"<td>{_fmt(v, digits)}</td>")
            else:
                cells.append(f"<td>{_esc(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = ""
    if len(df) > max_rows:
        more = f'<p class="note">First {max_rows} of {len(df)} rows.</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _normalise_metrics(raw) -> dict:
    """``{label: report}`` from metrics.json, tolerating a per-split level."""
    out = {}
    if not isinstance(raw, dict):
        return out
    for label, rep in raw.items():
        if not isinstance(rep, dict):
            continue
        if "linear" not in rep and isinstance(rep.get("test"), dict):
            rep = rep["test"]
        out[str(label)] = rep
    return out


# --------------------------------------------------------------------------- sections


def _section_metrics(metrics: dict) -> str:
    if not metrics:
        return _missing("metrics.json (no evaluated model in this run)")
    cols = [("RMSE", ("linear", "rmse")), ("R²", ("linear", "r2")), ("MAE", ("linear", "mae")),
            ("bias", ("linear", "bias")), ("NMAD", ("linear", "nmad")),
            ("RMSE [dex]", ("rmse_dex",)), ("outliers", ("outlier_fraction",))]
    head = "<th>model</th><th>n</th>" + "".join(f"<th>{c}</th>" for c, _ in cols)
    has_cov = any("coverage" in rep for rep in metrics.values())
    if has_cov:
        head += "<th>68% coverage</th><th>95% coverage</th>"
    rows = []
    for label, rep in metrics.items():
        cells = [f"<td>{_esc(label)}</td><td>{_esc(rep.get('n', '–'))}</td>"]
        for _, keys in cols:
            entry = rep
            for k in keys:
                entry = entry.get(k, {}) if isinstance(entry, dict) else {}
            cells.append(f"<td>{_entry_text(entry)}</td>")
        if has_cov:
            cov = rep.get("coverage", {})
            cells.append(f"<td>{_fmt(cov.get('68'))}</td><td>{_fmt(cov.get('95'))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    thr = next((rep.get("outlier_threshold_dex") for rep in metrics.values()
                if "outlier_threshold_dex" in rep), None)
    note = ("Values with bootstrap 95% intervals in brackets. Residual = predicted − true M/L."
            + (f" Outliers: |Δlog₁₀ M/L| > {_fmt(thr, 2)} dex." if thr is not None else ""))
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f'<p class="note">{note}</p>')


def _prediction_columns(pred: pd.DataFrame) -> list[str]:
    return [c for c in pred.columns if c.startswith("ml_pred_")]


def _true_vs_pred_png(y, p, label: str) -> bytes:
    from featuremass.models.metrics import r2_score, rmse

    fig = _new_figure(9.0, 3.9)
    ax1, ax2 = fig.subplots(1, 2)
    lim = (float(min(y.min(), np.nanmin(p))), float(max(y.max(), np.nanmax(p))))
    if len(y) >= 300:
        hb = ax1.hexbin(y, p, gridsize=40, bins="log", cmap="viridis", mincnt=1, extent=lim + lim)
        fig.colorbar(hb, ax=ax1, label="galaxies")
    else:
        ax1.scatter(y, p, s=10, alpha=0.7)
    ax1.plot(lim, lim, color="k", lw=1, ls="--")
    ax1.set(xlim=lim, ylim=lim, xlabel="true M/L", ylabel="predicted M/L", title=label)
    ax1.text(0.04, 0.96, f"RMSE = {rmse(y, p):.3f}\n$R^2$ = {r2_score(y, p):.3f}\nn = {len(y)}",
             transform=ax1.transAxes, va="top", fontsize=9,
             bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    resid = p - y
    ax2.scatter(y, resid, s=6, alpha=0.5)
    ax2.axhline(0, color="k", lw=1, ls="--")
    order = np.argsort(y)
    if len(y) >= 20:
        k = max(5, len(y) // 15)
        ys = pd.Series(resid[order]).rolling(k, center=True).median()
        ax2.plot(y[order], ys, color="C3", lw=2, label="running median")
        ax2.legend(loc="upper right", fontsize=8)
    ax2.set(xlabel="true M/L", ylabel="predicted − true", title="residuals")
    fig.tight_layout()
    return _fig_to_png(fig)


def _section_predictions(run: Path, pred: pd.DataFrame | None) -> str:
    parts = []
    if pred is not None and "ml_true" in pred.columns:
        y = pred["ml_true"].to_numpy(dtype=np.float64)
        for col in _prediction_columns(pred):
            p = pred[col].to_numpy(dtype=np.float64)
            ok = np.isfinite(y) & np.isfinite(p)
            if ok.sum() < 2:
                continue
            label = col[len("ml_pred_"):]
            parts.append(f"<figure>{_img_tag(_true_vs_pred_png(y[ok], p[ok], label), label)}"
                         f"<figcaption>{_esc(label)}: test split</figcaption></figure>")
    figs = sorted((run / "figures").glob("*.png")) if (run / "figures").is_dir() else []
    parts += [_figure_file(f) for f in figs]
    if not parts:
        return _missing("predictions.parquet (with ml_true and ml_pred_<model>) or figures/*.png")
    return f'<div class="figs">{"".join(parts)}</div>'


def _section_importance(run: Path) -> str:
    d = run / "importance"
    if not d.is_dir():
        return _missing("importance/ (run `featuremass importance`)")
    out = []
    for png in sorted(d.glob("*.png")):
        out.append(_figure_file(png))
    html_figs = f'<div class="figs">{"".join(out)}</div>' if out else ""
    tables = []
    for csv in sorted(d.glob("*.csv")):
        if "partial_dependence" in csv.stem:  # long curve data; its figure says it better
            continue
        try:
            df = pd.read_csv(csv)
        except Exception as exc:  # a bad table should not stop the page
            tables.append(_missing(f"{csv.name}: {exc}"))
            continue
        tables.append(f"<h3>{_esc(csv.stem.replace('_', ' '))}</h3>{_table(df, max_rows=15)}")
    for js in sorted(d.glob("*.json")):
        data = _read_json(js)
        if isinstance(data, dict):
            flat = {k: v for k, v in data.items() if isinstance(v, (int, float, str))}
            if flat:
                tables.append(f"<h3>{_esc(js.stem.replace('_', ' '))}</h3>"
                              + _table(pd.DataFrame({"quantity": list(flat), "value": list(flat.values())})))
    if not out and not tables:
        return _missing("importance/*.csv or *.png")
    return html_figs + "".join(tables)


def _learning_curve_png(rows: pd.DataFrame) -> bytes | None:
    if rows.empty or rows["n_train"].nunique() < 2:
        return None
    if "inputs" in rows.columns:
        # Input-independent rows (the mean, inputs "-") belong on every panel.
        shared = rows[rows["inputs"] == "-"]
        rows = pd.concat([rows[rows["inputs"] != "-"]]
                         + [shared.assign(inputs=i) for i in rows["inputs"].unique() if i != "-"],
                         ignore_index=True)
    groups = [c for c in ("npix", "inputs") if c in rows.columns]
    panels = rows.groupby(groups) if groups else [((), rows)]
    panels = list(panels)
    fig = _new_figure(4.6 * len(panels), 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    # One colour per model on every panel, so one legend reads for all of them.
    colours = {m: f"C{i % 10}" for i, m in enumerate(sorted(rows["model"].unique()))}
    for ax, (key, sub) in zip(axes, panels, strict=True):
        for model, g in sub.groupby("model"):
            g = g.sort_values("n_train")
            yerr = None
            if "rmse_ci" in g.columns and g["rmse_ci"].notna().all():
                ci = np.array(g["rmse_ci"].tolist(), dtype=float)
                yerr = np.abs(ci.T - g["rmse"].to_numpy())
            ax.errorbar(g["n_train"], g["rmse"], yerr=yerr, marker="o", capsize=2, label=model,
                        color=colours[model])
        ax.set_xscale("log")
        key = key if isinstance(key, tuple) else (key,)
        ax.set(xlabel="training galaxies", ylabel="test RMSE (M/L)",
               title=", ".join(f"{g}={k}" for g, k in zip(groups, key, strict=True)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _fig_to_png(fig)


def _rmse_bars_png(metrics: dict) -> bytes | None:
    labels, vals, los, his = [], [], [], []
    for label, rep in metrics.items():
        e = rep.get("linear", {}).get("rmse")
        if not isinstance(e, dict):
            continue
        labels.append(label)
        vals.append(e["value"])
        lo, hi = e.get("ci95", [np.nan, np.nan])
        los.append(e["value"] - lo)
        his.append(hi - e["value"])
    if len(labels) < 2:
        return None
    fig = _new_figure(6.5, 0.5 * len(labels) + 1.2)
    ax = fig.subplots()
    ypos = np.arange(len(labels))
    colors = ["C3" if "cnn" in lbl.lower() or "hybrid" in lbl.lower() else "C0" for lbl in labels]
    ax.barh(ypos, vals, xerr=[los, his], color=colors, capsize=3)
    ax.set_yticks(ypos, labels)
    ax.invert_yaxis()
    ax.set_xlabel("test RMSE (M/L), 95% bootstrap interval")
    fig.tight_layout()
    return _fig_to_png(fig)


def _section_cnn(run: Path, metrics: dict, bench) -> str:
    parts = []
    cnn_labels = [k for k in metrics if "cnn" in k.lower() or "hybrid" in k.lower()]
    if cnn_labels:
        bars = _rmse_bars_png(metrics)
        if bars:
            parts.append(f"<figure>{_img_tag(bars, 'RMSE by model')}<figcaption>Test RMSE of every "
                         "model in this run (CNN-based models in red).</figcaption></figure>")
    if isinstance(bench, dict) and bench.get("rows"):
        rows = pd.DataFrame(bench["rows"])
        show = [c for c in ("npix", "n_train", "inputs", "model", "rmse", "r2", "seconds") if c in rows]
        table = rows[show].copy()
        for c, ci in (("rmse", "rmse_ci"), ("r2", "r2_ci")):
            if c in rows and ci in rows:
                table[c] = [f"{_fmt(v)} [{_fmt(i[0])}, {_fmt(i[1])}]" if isinstance(i, list) else _fmt(v)
                            for v, i in zip(rows[c], rows[ci], strict=True)]
        if "seconds" in table:
            table["seconds"] = [f"{v:.0f}" if np.isfinite(v) else "" for v in
                                pd.to_numeric(table["seconds"], errors="coerce").astype(float)]
        if "epochs_max" in rows:  # the CNN's epoch cap belongs with its name
            table["model"] = [f"{m} (≤{int(e)} epochs)" if pd.notna(e) else m
                              for m, e in zip(rows["model"], rows["epochs_max"], strict=True)]
        parts.append("<h3>Benchmark</h3>" + _table(table, max_rows=200))
        lc = _learning_curve_png(rows)
        if lc:
            parts.append(f"<figure>{_img_tag(lc, 'learning curves')}<figcaption>Learning curves: "
                         "test RMSE against training-set size.</figcaption></figure>")
        if bench.get("command"):
            parts.append(f"<p class=note>Reproduce with:</p><pre>{_esc(bench['command'])}</pre>")
    for png in sorted((run / "benchmark").glob("*.png")) if (run / "benchmark").is_dir() else []:
        parts.append(_figure_file(png))
    if not parts:
        return _missing("a CNN result (metrics.json entry with 'cnn' in its label) or "
                        "benchmark.json (install the cnn extra and rerun)")
    if not cnn_labels and not bench:
        parts.insert(0, '<p class="note">No CNN was trained in this run.</p>')
    return "".join(parts)


def _stamp_png(stamp: np.ndarray) -> bytes:
    from PIL import Image

    a = np.asarray(stamp, dtype=np.float64)
    finite = np.isfinite(a)
    lo, hi = (np.percentile(a[finite], [0.5, 99.8]) if finite.any() else (0.0, 1.0))
    scaled = np.clip((np.nan_to_num(a, nan=lo) - lo) / max(hi - lo, 1e-12), 0, 1)
    img = Image.fromarray((scaled * 255).astype(np.uint8), mode="L")
    scale = max(1, 160 // max(a.shape))
    img = img.resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _load_stamps(run: Path, dataset: dict | None, ids: np.ndarray) -> dict:
    """``{galaxy_id: stamp}`` for ``ids`` from gallery/ or the dataset's test split."""
    g = run / "gallery"
    if (g / "stamps.npy").is_file() and (g / "ids.npy").is_file():
        stamps = np.load(g / "stamps.npy", allow_pickle=False)
        gids = np.load(g / "ids.npy", allow_pickle=False)
        return {int(i): stamps[k] for k, i in enumerate(gids) if int(i) in set(ids.tolist())}
    if not dataset or not dataset.get("root") or not dataset.get("npix"):
        return {}
    from featuremass.io.layout import load_split

    root = Path(dataset["root"])
    if not root.is_absolute():
        root = run / root
    try:
        ds = load_split(root, npix=int(dataset["npix"]), split="test")
    except FeaturemassError as exc:
        log.warning("gallery stamps unavailable: %s", exc)
        return {}
    pos = {int(i): k for k, i in enumerate(ds.ids)}
    return {int(i): np.asarray(ds.images[pos[int(i)]]) for i in ids if int(i) in pos}


def _key_features(run: Path, feats: pd.DataFrame | None) -> list[str]:
    if feats is None:
        return []
    ranked = []
    d = run / "importance"
    if d.is_dir():
        for csv in sorted(d.glob("*.csv")):
            try:
                df = pd.read_csv(csv)
            except Exception:  # an unreadable table only loses the ranking
                continue
            if "feature" in df.columns:
                ranked = [f for f in df["feature"].astype(str) if f in feats.columns]
                if ranked:
                    break
    if not ranked:
        ranked = [f for f in PREFERRED_FEATURES if f in feats.columns]
    if not ranked:
        ranked = [c for c in feats.columns if c not in ("galaxy_id", "flag")]
    return ranked[:4]


def _section_gallery(run: Path, pred: pd.DataFrame | None, metrics: dict, dataset) -> str:
    if pred is None or "ml_true" not in pred.columns or not _prediction_columns(pred):
        return _missing("predictions.parquet with ml_true and a ml_pred_<model> column")
    cols = _prediction_columns(pred)
    # Show the model with the lowest test RMSE (from metrics.json when present).
    def rmse_of(col):
        rep = metrics.get(col[len("ml_pred_"):], {})
        e = rep.get("linear", {}).get("rmse", {})
        if isinstance(e, dict) and "value" in e:
            return e["value"]
        r = pred[col] - pred["ml_true"]
        return float(np.sqrt(np.nanmean(r**2)))

    col = min(cols, key=rmse_of)
    label = col[len("ml_pred_"):]
    df = pred[["galaxy_id", "ml_true", col]].dropna()
    df = df.assign(abs_err=(df[col] - df["ml_true"]).abs()).sort_values("abs_err")
    n = len(df)
    picks = [("best", df.head(_GALLERY_EACH))]
    if n > 2 * _GALLERY_EACH:
        mid = df.iloc[n // 2 - _GALLERY_EACH // 2: n // 2 - _GALLERY_EACH // 2 + _GALLERY_EACH]
        picks.append(("typical", mid))
    picks.append(("worst", df.tail(_GALLERY_EACH).iloc[::-1]))
    ids = np.concatenate([p["galaxy_id"].to_numpy(dtype=np.int64) for _, p in picks])
    stamps = _load_stamps(run, dataset, ids)
    feats = None
    fpath = run / "features" / "test.parquet"
    if fpath.is_file():
        try:
            feats = pd.read_parquet(fpath).set_index("galaxy_id")
        except Exception as exc:  # the gallery still works without features
            log.warning("cannot read %s: %s", fpath, exc)
    keys = _key_features(run, feats.reset_index() if feats is not None else None)
    cards = []
    seen = set()
    for tag, rows in picks:
        # Not iterrows: it would cast the 19-digit int64 ids to float and lose digits.
        for gid, true_ml, pred_ml in zip(rows["galaxy_id"].to_numpy(np.int64).tolist(),
                                         rows["ml_true"].tolist(), rows[col].tolist(), strict=True):
            if gid in seen:
                continue
            seen.add(gid)
            img = (_img_tag(_stamp_png(stamps[gid]), f"galaxy {gid}") if gid in stamps
                   else '<p class="note">no stamp</p>')
            feat_rows = "".join(
                f"<tr><td>{_esc(k)}</td><td>{_fmt(feats.at[gid, k])}</td></tr>"
                for k in keys if feats is not None and gid in feats.index)
            cards.append(
                f'<div class="card">{img}<div><span class="tag {tag}">{tag}</span> · id {gid}</div>'
                f"<table><tr><td>true M/L</td><td>{_fmt(true_ml)}</td></tr>"
                f"<tr><td>predicted</td><td>{_fmt(pred_ml)}</td></tr>{feat_rows}</table></div>")
    note = (f'<p class="note">Model: {_esc(label)} (lowest test RMSE). Best and worst are by '
            f"absolute error among {n} test galaxies; “typical” are around the median error. "
            "Stamps are shown in the seed's log stretch.</p>")
    if not stamps:
        note += '<p class="missing">Stamps not available (dataset folder not found).</p>'
    return note + f'<div class="gallery">{"".join(cards)}</div>'


def _section_dataset(dataset) -> str:
    if not isinstance(dataset, dict):
        return _missing("dataset.json")
    rows = []
    for key, value in dataset.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {_fmt(v) if isinstance(v, float) else v}" for k, v in value.items())
        rows.append({"field": key, "value": value})
    return _table(pd.DataFrame(rows), max_rows=100)


def _section_provenance(commands) -> str:
    if not isinstance(commands, dict):
        return _missing("commands.json")
    parts = []
    meta = {k: commands[k] for k in ("date", "machine") if k in commands}
    if meta:
        parts.append(_table(pd.DataFrame({"field": list(meta), "value": list(meta.values())})))
    cmds = commands.get("commands") or []
    if cmds:
        secs = commands.get("seconds", {})
        lines = []
        for c in cmds:
            step = c.get("step", "") if isinstance(c, dict) else ""
            cmd = c.get("command", c) if isinstance(c, dict) else c
            t = f"  # {secs[step]:.1f} s" if step in secs else ""
            lines.append(f"# {step}{t}\n{cmd}" if step else str(cmd))
        parts.append("<h3>Commands</h3><pre>" + _esc("\n".join(lines)) + "</pre>")
    versions = commands.get("versions") or {}
    if versions:
        parts.append("<h3>Versions</h3>" + _table(
            pd.DataFrame({"package": list(versions), "version": list(versions.values())})))
    return "".join(parts) or _missing("commands and versions in commands.json")


# --------------------------------------------------------------------------- page


def build_report(run_dir, out=None, *, benchmark=None) -> Path:
    """Write one self-contained HTML page summarising a run folder.

    Parameters
    ----------
    run_dir : path
        A run folder in the layout of this module's docstring. Every artefact
        is optional; a missing one makes its section say so.
    out : path, optional
        HTML file to write (default ``run_dir/report.html``).
    benchmark : path, optional
        A ``benchmark.json`` written elsewhere (e.g. ``reports/benchmark.json``
        by ``benchmarks/bench_accuracy.py``) to show in the CNN-vs-classical
        section instead of ``run_dir/benchmark.json``.

    Returns
    -------
    Path
        The HTML file.

    Raises
    ------
    FeaturemassError
        When ``run_dir`` is not a folder, or ``benchmark`` is not a readable
        benchmark table.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FeaturemassError(f"run folder not found: {run}")
    bench = _read_json(Path(benchmark) if benchmark is not None else run / "benchmark.json")
    if benchmark is not None and not (isinstance(bench, dict)
                                      and isinstance(bench.get("rows"), list)):
        raise FeaturemassError(f"{benchmark}: not a benchmark table (a JSON object with "
                               "'rows', as written by benchmarks/bench_accuracy.py)")
    out = Path(out) if out is not None else run / REPORT_FILE
    metrics = _normalise_metrics(_read_json(run / "metrics.json"))
    dataset = _read_json(run / "dataset.json")
    commands = _read_json(run / "commands.json")
    pred = None
    ppath = run / "predictions.parquet"
    if ppath.is_file():
        try:
            pred = pd.read_parquet(ppath)
        except Exception as exc:  # a corrupt table should not stop the page
            log.warning("cannot read %s: %s", ppath, exc)

    bodies = {
        "metrics": lambda: _section_metrics(metrics),
        "predictions": lambda: _section_predictions(run, pred),
        "importance": lambda: _section_importance(run),
        "cnn": lambda: _section_cnn(run, metrics, bench),
        "gallery": lambda: _section_gallery(run, pred, metrics, dataset),
        "dataset": lambda: _section_dataset(dataset),
        "provenance": lambda: _section_provenance(commands),
    }
    sections = []
    for sid, title in SECTIONS:
        try:
            body = bodies[sid]()
        except Exception as exc:  # one broken artefact must not lose the whole page
            log.warning("report section %s failed: %s", sid, exc)
            body = _missing(f"this section could not be built ({type(exc).__name__}: {exc})")
        sections.append(f'<section id="{sid}"><h2>{_esc(title)}</h2>{body}</section>')
    nav = "".join(f'<a href="#{sid}">{_esc(t)}</a>' for sid, t in SECTIONS)
    when = (commands or {}).get("date") or _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>featuremass report: {_esc(run.name)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>featuremass report</h1><p>{_esc(run.resolve())} · {_esc(when)} · "
        f"featuremass {_esc(__version__)}</p></header><nav>{nav}</nav><main>"
        + "".join(sections) + "</main></body></html>"
    )
    from featuremass.io.layout import atomic_output

    with atomic_output(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
