"""The dashboard's stylesheet, inlined into the page (the page fetches nothing).

A grid of cards and sections that folds to one column below about 1,100 px, tables that wrap
long names instead of widening the page, and charts that scale to their section: no
horizontal scroll at 1366×768 (the browser test checks it).
"""

__all__ = ["STYLE"]

STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2329;
background:#f4f6f8}
header{background:#1d2f45;color:#fff;padding:.7em 1.5em;display:flex;flex-wrap:wrap;
gap:.6em 2em;align-items:center;justify-content:space-between}
header h1{font-size:1.3em;margin:0}header .sub{color:#c9d6e3;font-size:.9em}
header form{display:flex;gap:.4em;align-items:center;flex-wrap:wrap;margin:0}
header input{width:12.5em;padding:.25em .4em;border:1px solid #8aa;border-radius:4px}
header input[type=password]{width:14em}
button{padding:.3em .8em;border-radius:4px;border:1px solid #2f6fb0;background:#2f7fbf;
color:#fff;cursor:pointer;font:inherit}
button.quiet{background:transparent;border-color:#c9d6e3}
main{padding:1em 1.5em;max-width:1400px;margin:0 auto}
.notice{background:#e6f4ea;border:1px solid #9ccaa9;padding:.5em .9em;border-radius:6px}
.notice.bad{background:#fdecea;border-color:#e6a19b}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:.8em;
margin:.2em 0 1em}
.card{background:#fff;border:1px solid #dde3e9;border-radius:6px;padding:.6em .9em}
.card .big{display:block;font-size:1.45em;font-weight:600}
.card span.label,.card small{color:#5b6875;font-size:.85em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1em}
section{background:#fff;border:1px solid #dde3e9;border-radius:6px;padding:.4em 1em .8em;
min-width:0}
section.wide{grid-column:1/-1}
h2{font-size:1.05em;margin:.5em 0}
svg{max-width:100%;height:auto}svg text{font:12px system-ui,sans-serif;fill:#333}
table{border-collapse:collapse;width:100%}
td,th{padding:.2em .5em;text-align:left;border-bottom:1px solid #eef1f4;
overflow-wrap:anywhere}
th{color:#5b6875;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.above{color:#c62828;font-weight:600}.est{color:#8a5a00}.muted{color:#5b6875}
.proposal{border:1px solid #dde3e9;border-radius:6px;padding:.5em .8em;margin:.5em 0}
.proposal dl{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em;margin:.4em 0}
.proposal details{margin:.3em 0}.proposal summary{cursor:pointer;color:#2f6fb0}
.proposal dt{color:#5b6875}.proposal dd{margin:0;overflow-wrap:anywhere}
pre{white-space:pre-wrap;margin:0;font-size:.9em}
"""
