"""The private HTML report of a run, built from the key alone.

One self-contained file (images embedded as data URIs, inline CSS, no script, nothing
fetched from the network): a summary (subjects, files by handler, exclusions, warnings),
per subject the defacing QC images and the fields changed in each file, the results of
the final check, and the time each stage took. Original values are masked unless asked
for; the report still shows faces (QC images of the input), so it is written owner-only
and never inside a dataset.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath

from bidsanon._version import __version__
from bidsanon.errors import UsageError
from bidsanon.key import KeyData, write_private

#: Order and captions of the defacing QC images (keys of ``key.files[i]["qc"]``).
QC_CAPTIONS = {"sagittal": "sagittal slice, before | after",
               "axial": "axial slice, before | after",
               "render_front": "3D render after defacing",
               "render_yaw+60": "3D render after defacing, turned 60° (left cheek and ear)",
               "render_yaw-60": "3D render after defacing, turned -60° (right cheek and ear)",
               "render_pitch-20": "3D render after defacing, seen from 20° below",
               "contours": "after defacing (nilearn): removed region red, protected brain "
                           "cyan, cover yellow"}
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_MAX_VALUE = 200

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
main{max-width:1200px;margin:auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d5dae0}
h3{font-size:16px;margin:20px 0 6px}
.private{background:#8b1a1a;color:#fff;padding:8px 24px;font-weight:600}
table{border-collapse:collapse;margin:6px 0;background:#fff}
th,td{border:1px solid #d5dae0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
.error{color:#a40000;font-weight:600}.warning{color:#8a5a00;font-weight:600}.info{color:#56606b}
figure{display:inline-block;margin:6px 12px 6px 0;vertical-align:top;background:#fff;
padding:6px;border:1px solid #d5dae0}
figure img{display:block;max-width:560px;height:auto;image-rendering:pixelated}
figcaption{font-size:12px;color:#56606b;margin-top:4px}
details{margin:2px 0}summary{cursor:pointer}.masked{color:#56606b}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #d5dae0;
padding:8px 14px;min-width:120px}.card b{display:block;font-size:20px}
"""


# --------------------------------------------------------------------------- values


def qc_order(qc: dict) -> list[str]:
    """The QC pictures of one file in the report's order: captioned ones first."""
    return [n for n in QC_CAPTIONS if n in qc] + [n for n in qc if n not in QC_CAPTIONS]


def mask(value: object, show: bool = False) -> str:
    """An original value for display: its first character and dots unless ``show``."""
    if value is None:
        return ""
    text = str(value)
    if show:
        return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE] + "…"
    text = text.strip()
    return f"{text[:1]}•••" if text else ""


def mask_quoted(message: str, show: bool = False) -> str:
    """A finding's message with the values it quotes masked."""
    if show:
        return message
    return _QUOTED.sub(lambda m: m.group(0)[0] + mask(m.group(0)[1:-1]) + m.group(0)[0],
                       message)


def _e(text: object) -> str:
    return html.escape("" if text is None else str(text))


def image_data_uri(path: str | Path) -> str | None:
    """A PNG/JPEG file as a data URI (None when it cannot be read)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError:
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        kind = "png"
    elif data[:3] == b"\xff\xd8\xff":
        kind = "jpeg"
    else:
        return None
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- grouping


def subject_of(output: str) -> str | None:
    """The new subject label of an output path (None for dataset-level files)."""
    first = PurePosixPath(output).parts[0] if output else ""
    return first[4:] if first.startswith("sub-") else None


def files_by_subject(key: KeyData) -> dict[str | None, list[dict]]:
    """``key.files`` grouped by new subject label (None: dataset-level files)."""
    out: dict[str | None, list[dict]] = defaultdict(list)
    for f in key.files:
        out[subject_of(f.get("output", ""))].append(f)
    return out


# --------------------------------------------------------------------------- sections


def _summary(key: KeyData, run: dict, show: bool) -> str:
    counts = dict(run.get("counts", {}))
    excluded = counts.pop("excluded", len(run.get("excluded", [])))
    active = [s for s, e in key.subjects.items() if not e.withdrawn]
    findings = run.get("findings", [])
    sev = Counter(f.get("severity", "info") for f in findings)
    cards = [("subjects", len(active)), ("files written", len(key.files)),
             ("excluded", excluded), ("warnings", len(run.get("warnings", []))
                                      + sum(len(f.get("warnings", [])) for f in key.files)),
             ("failed", len(run.get("failed", []))), ("check errors", sev.get("error", 0))]
    out = ['<h2 id="summary">Summary</h2><div class="cards">']
    out += [f'<div class="card"><b>{n}</b>{_e(label)}</div>' for label, n in cards]
    out.append("</div>")
    out.append("<p>Run " + _e(run.get("time", "?")) + " with bidsanon "
               + _e(run.get("tool_version", "?")) + "; source dataset "
               + f'<code>{_e(key.source_root if show else mask(key.source_root))}</code>'
               + "; policy digest <code>" + _e(key.policy_digest[:12]) + "</code>.</p>")
    out.append("<h3>Files by handler</h3><table><tr><th>handler</th><th>files</th></tr>")
    out += [f'<tr><td>{_e(h)}</td><td class="num">{n}</td></tr>'
            for h, n in sorted(counts.items())]
    out.append("</table>")
    withdrawn = run.get("withdrawn", [])
    if withdrawn:
        out.append(f"<p>{len(withdrawn)} subject(s) withdrawn and left out.</p>")
    reasons = Counter(why for _, why in run.get("excluded", []))
    if reasons:
        out.append("<h3>Excluded</h3><table><tr><th>why</th><th>files</th></tr>")
        out += [f'<tr><td>{_e(w)}</td><td class="num">{n}</td></tr>'
                for w, n in reasons.most_common()]
        out.append("</table>")
    warnings = list(run.get("warnings", []))
    warnings += [f"{f.get('output')}: {w}" for f in key.files for w in f.get("warnings", [])]
    if warnings or run.get("failed"):
        out.append("<h3>Warnings and failures</h3><ul>")
        out += [f'<li class="error">FAILED: {_e(mask_quoted(x, show))}</li>'
                for x in run.get("failed", [])]
        out += [f"<li>{_e(mask_quoted(w, show))}</li>" for w in warnings]
        out.append("</ul>")
    return "\n".join(out)


def _qc_figures(f: dict) -> str:
    qc = f.get("qc") or {}
    if not qc:
        return ""
    names = qc_order(qc)
    out = [f"<h4><code>{_e(f.get('output'))}</code></h4>"]
    for name in names:
        uri = image_data_uri(qc[name])
        caption = QC_CAPTIONS.get(name, name.replace("_", " "))
        if uri is None:
            out.append(f'<p class="warning">QC image {_e(name)} is missing '
                       f"({_e(Path(qc[name]).name)}): rebuild it with a new run.</p>")
            continue
        out.append(f'<figure><img src="{uri}" alt="{_e(caption)}" data-qc="{_e(name)}">'
                   f"<figcaption>{_e(caption)}</figcaption></figure>")
    metrics = f.get("metrics") or {}
    if metrics:
        out.append("<p>" + "; ".join(f"{_e(k.replace('_', ' '))}: {_fmt(v)}"
                                      for k, v in metrics.items()) + "</p>")
    out.append('<p class="info">Red outline: removed region; cyan outline: protected '
               "(dilated) brain; yellow outline: the cover written over the cut and the "
               "ears.</p>")
    return "\n".join(out)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return _e(value)


def _changes_table(f: dict, show: bool) -> str:
    changes = f.get("changes") or []
    warnings = f.get("warnings") or []
    head = (f"<summary><code>{_e(f.get('output'))}</code> — {_e(f.get('handler'))}, "
            f"{len(changes)} change(s)"
            + (f', <span class="warning">{len(warnings)} warning(s)</span>' if warnings else "")
            + f", {float(f.get('seconds', 0.0)):.2f} s</summary>")
    if not changes and not warnings:
        return f"<details>{head}<p>No field changed (copied or rewritten as it was).</p>" \
               "</details>"
    rows = ["<table><tr><th>field</th><th>action</th><th>where</th><th>original</th>"
            "<th>written</th></tr>"]
    for c in changes:
        old = c.get("old")
        rows.append(f"<tr><td><code>{_e(c.get('field'))}</code></td><td>{_e(c.get('action'))}"
                    f"</td><td>{_e(c.get('location'))}</td>"
                    f'<td class="{"" if show else "masked"}">{_e(mask(old, show))}</td>'
                    f"<td>{_e(mask(c.get('new'), True))}</td></tr>")
    rows.append("</table>")
    rows += [f'<p class="warning">{_e(mask_quoted(w, show))}</p>' for w in warnings]
    return f"<details>{head}{''.join(rows)}</details>"


def _subjects(key: KeyData, show: bool) -> str:
    groups = files_by_subject(key)
    inverse = key.inverse_subjects()
    out = ['<h2 id="subjects">Subjects</h2>']
    for label in sorted(k for k in groups if k is not None):
        files = groups[label]
        orig = inverse.get(label)
        entry = key.subjects.get(orig) if orig else None
        out.append(f'<section class="subject"><h3 id="sub-{_e(label)}">sub-{_e(label)}</h3>')
        if entry is not None:
            offset = entry.offset_days
            sessions = ", ".join(f"ses-{mask(a, show)} → ses-{_e(b)}"
                                 for a, b in sorted(entry.sessions.items()))
            out.append(f"<p>original label <code>{_e(mask(orig, show))}</code>; date offset "
                       f"{_e(offset if show else ('hidden' if offset is not None else 'none'))}"
                       f"{'; sessions ' + sessions if sessions else ''}</p>")
        qc = [_qc_figures(f) for f in files if f.get("qc")]
        if qc:
            out.append("<h4>Defacing QC</h4>" + "\n".join(qc))
        out.append("<h4>Files</h4>")
        out += [_changes_table(f, show) for f in files]
        out.append("</section>")
    if groups.get(None):
        out.append('<h2 id="dataset-files">Dataset files</h2>')
        out += [_changes_table(f, show) for f in groups[None]]
    return "\n".join(out)


#: Change locations of free-text replacements (bidsanon.scrub): a known identifying
#: value of the plan, or a text pattern.
_TEXT_KINDS = {"known identifier": "known identifying value", "email": "e-mail address",
               "url": "web address", "phone": "phone number", "date": "date"}


def replaced_values(key: KeyData) -> list[tuple[str, str, int, list[str]]]:
    """Values replaced in free text (README, dataset_description.json, sidecar and
    table texts, ...): (value as first written, kind, times, output files), by kind
    and value (case-insensitively)."""
    found: dict[tuple[str, str], list] = {}
    for f in key.files:
        for c in f.get("changes") or []:
            kind = _TEXT_KINDS.get(c.get("location") or "")
            old = c.get("old")
            if kind is None or not isinstance(old, str) or c.get("action") != "replace":
                continue
            entry = found.setdefault((kind, old.lower()), [old, 0, []])
            entry[1] += 1
            if f.get("output") not in entry[2]:
                entry[2].append(f.get("output"))
    return [(v[0], kind, v[1], v[2]) for (kind, _), v in sorted(found.items())]


def _replaced(key: KeyData, show: bool) -> str:
    rows = replaced_values(key)
    out = ['<h2 id="replaced">Replaced in free text</h2>']
    if not rows:
        out.append("<p>No identifying value or text pattern was replaced in free text.</p>")
        return "\n".join(out)
    out.append("<p>Values the plan collected from identifying fields (names, institutions, "
               "sites, projects, IDs) and text patterns, replaced wherever free text "
               "repeated them" + ("" if show else " (masked)") + ".</p>")
    out.append("<table><tr><th>value</th><th>kind</th><th>times</th><th>files</th></tr>")
    for value, kind, times, files in rows:
        shown = ", ".join(f"<code>{_e(o)}</code>" for o in files[:5])
        if len(files) > 5:
            shown += f" and {len(files) - 5} more"
        out.append(f'<tr><td class="{"" if show else "masked"}">{_e(mask(value, show))}</td>'
                   f'<td>{_e(kind)}</td><td class="num">{times}</td><td>{shown}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def _findings(run: dict, show: bool) -> str:
    findings = sorted(run.get("findings", []),
                      key=lambda f: (SEVERITY_ORDER.get(f.get("severity"), 3), f.get("path", "")))
    out = ['<h2 id="check">Check of the output</h2>']
    if not findings:
        out.append("<p>The final check found nothing (or was not run: <code>run.check</code>)."
                   "</p>")
        return "\n".join(out)
    sev = Counter(f.get("severity") for f in findings)
    out.append("<p>" + ", ".join(f'<span class="{s}">{sev[s]} {s}</span>'
                                 for s in ("error", "warning", "info") if sev.get(s)) + "</p>")
    out.append("<table><tr><th>severity</th><th>file</th><th>rule</th><th>where</th>"
               "<th>message</th></tr>")
    for f in findings:
        s = f.get("severity", "info")
        out.append(f'<tr><td class="{_e(s)}">{_e(s)}</td><td><code>{_e(f.get("path"))}</code>'
                   f'</td><td><code>{_e(f.get("rule"))}</code></td>'
                   f'<td>{_e(f.get("location"))}</td>'
                   f'<td>{_e(mask_quoted(f.get("message", ""), show))}</td></tr>')
    out.append("</table>")
    renders = [f for f in findings if f.get("location", "").startswith("render saved to ")]
    for f in renders:
        uri = image_data_uri(f["location"].removeprefix("render saved to "))
        if uri:
            out.append(f'<figure><img src="{uri}" alt="face render" data-qc="face">'
                       f'<figcaption>{_e(f.get("path"))}: face detected</figcaption></figure>')
    return "\n".join(out)


def _timing(key: KeyData, run: dict) -> str:
    timings = run.get("timings", {})
    out = ['<h2 id="timing">Timing</h2><table><tr><th>stage</th><th>seconds</th></tr>']
    out += [f'<tr><td>{_e(k)}</td><td class="num">{float(v):.2f}</td></tr>'
            for k, v in timings.items()]
    if timings:
        out.append(f'<tr><th>total</th><th class="num">{sum(map(float, timings.values())):.2f}'
                   "</th></tr>")
    out.append("</table>")
    by_handler: dict[str, float] = defaultdict(float)
    for f in key.files:
        by_handler[f.get("handler", "?")] += float(f.get("seconds", 0.0))
    if by_handler:
        out.append("<h3>File time by handler (summed over workers)</h3><table><tr><th>handler"
                   "</th><th>seconds</th></tr>")
        out += [f'<tr><td>{_e(h)}</td><td class="num">{s:.2f}</td></tr>'
                for h, s in sorted(by_handler.items(), key=lambda x: -x[1])]
        out.append("</table>")
        slow = sorted(key.files, key=lambda f: -float(f.get("seconds", 0.0)))[:10]
        out.append("<h3>Slowest files</h3><table><tr><th>file</th><th>handler</th>"
                   "<th>seconds</th></tr>")
        out += [f'<tr><td><code>{_e(f.get("output"))}</code></td><td>{_e(f.get("handler"))}'
                f'</td><td class="num">{float(f.get("seconds", 0.0)):.2f}</td></tr>'
                for f in slow]
        out.append("</table>")
    return "\n".join(out)


def class_size_svg(sizes: dict[int, int], target: int, width: int = 360,
                   height: int = 120) -> str:
    """A small bar plot (inline SVG) of how many equivalence classes have each size;
    bars below the k target in red."""
    if not sizes:
        return ""
    top = max(sizes.values())
    n = len(sizes)
    bar = max(6, (width - 40) // max(1, n) - 4)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" '
             'role="img" aria-label="equivalence class sizes">']
    for i, (size, count) in enumerate(sorted(sizes.items())):
        h = round((height - 10) * count / top)
        x = 30 + i * (bar + 4)
        colour = "#c33" if size < target else "#39c"
        parts.append(f'<rect x="{x}" y="{height - h}" width="{bar}" height="{h}" '
                     f'fill="{colour}"><title>{count} classes of size {size}</title></rect>')
        parts.append(f'<text x="{x + bar / 2}" y="{height + 14}" font-size="10" '
                     f'text-anchor="middle">{size}</text>')
    parts.append(f'<text x="30" y="{height + 28}" font-size="10">class size (k target '
                 f"{target}); bar height: number of classes (max {top})</text></svg>")
    return "".join(parts)


def _privacy(key: KeyData) -> str:
    """k-anonymity of the participant tables: k before and after, the distribution of
    class sizes as a plot (sizes only, never values)."""
    rows = []
    for f in key.files:
        m = f.get("metrics") or {}
        if "k_after" not in m:
            continue
        sizes = {int(k.rsplit("_", 1)[1]): int(v) for k, v in m.items()
                 if k.startswith("classes_of_size_")}
        gen = [c for c in f.get("changes", []) if c.get("action") in ("generalise", "suppress")]
        rows.append(f"<h3>{_e(f['output'])}</h3><p>k = {int(m['k_before'])} before, "
                    f"{int(m['k_after'])} after (target {int(m['k_target'])}); "
                    f"{int(m.get('suppressed_cells', 0))} cells suppressed.</p>"
                    + ("<ul>" + "".join(f"<li>{_e(c['field'])}: {_e(c.get('new') or '')}</li>"
                                        for c in gen) + "</ul>" if gen else "")
                    + class_size_svg(sizes, int(m["k_target"])))
    if not rows:
        return ""
    return '<h2 id="privacy">Quasi-identifiers (k-anonymity)</h2>' + "".join(rows)


# --------------------------------------------------------------------------- document


def build_html(key: KeyData, show_values: bool = False) -> str:
    """The whole report as one HTML string (the latest run of the key)."""
    run = key.runs[-1] if key.runs else {}
    nav = " · ".join(f'<a href="#{i}">{t}</a>' for i, t in (
        ("summary", "Summary"), ("privacy", "k-anonymity"), ("replaced", "Replaced in free text"),
        ("subjects", "Subjects"), ("check", "Check"), ("timing", "Timing")))
    body = [
        '<div class="private">PRIVATE — this report shows QC images of the original '
        "images (with faces) and " + ("original values" if show_values else
                                      "masked original values")
        + ". Keep it with the key; never publish it.</div><main>",
        "<h1>bidsanon run report</h1>", f"<p>{nav}</p>",
        _summary(key, run, show_values), _privacy(key), _replaced(key, show_values),
        _subjects(key, show_values),
        _findings(run, show_values), _timing(key, run),
        f'<p class="info">Written {_e(dt.datetime.now().replace(microsecond=0).isoformat())} '
        f"by bidsanon {_e(__version__)} from the key alone; rebuild it with "
        "<code>bidsanon report KEY</code>.</p></main>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta name=\"robots\" content=\"noindex\">"
            "<title>bidsanon report (private)</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def inside_dataset(path: Path) -> Path | None:
    """The BIDS dataset folder (one holding dataset_description.json) that ``path`` would
    be written into, if any."""
    for parent in Path(path).resolve().parents:
        if (parent / "dataset_description.json").is_file():
            return parent
    return None


def write_report(key: KeyData, path: Path, *, show_values: bool = False) -> None:
    """Write the report of ``key``'s latest run to ``path`` (mode 0600, atomically).

    Raises :class:`~bidsanon.errors.UsageError` when ``path`` is inside a BIDS dataset:
    the report shows faces and original values.
    """
    path = Path(path)
    dataset = inside_dataset(path)
    if dataset is not None:
        raise UsageError(f"{path} is inside the dataset {dataset}; the report is private: "
                         "write it next to the key")
    write_private(path, build_html(key, show_values).encode("utf-8"))
