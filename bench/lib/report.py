"""Renders BENCHMARKS.md from one results JSON written by bench/run."""

import json
import os
import sys

path = sys.argv[1]
R = json.load(open(path))
M = R["machine"]
V = M["versions"]
S = R["servers"]
H = R["hello"]
X = R["extract"]
rel = os.path.relpath(path, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path)))))


def f(x, nd=0):
    return f"{x:,.{nd}f}"


def times_ratio(num, den):
    """throughput ratio, plain multiplier"""
    return f"{num / den:.2f}×"


def faster(other_s, sluice_s):
    r = other_s / sluice_s
    return f"**{r:.1f}× faster**" if r >= 1 else f"**{1 / r:.1f}× slower**"


def less_mem(other_mb, sluice_mb):
    r = other_mb / sluice_mb
    return f"**{r:.1f}× less memory**" if r >= 1 else f"**{1 / r:.1f}× more memory**"


# ------------------------------------------------------------------ BI protocols
def bi_section(B):
    o = []
    w = o.append
    w("## 1M rows to a BI tool: OData and the PostgreSQL wire")
    w("")
    w(f"The `orders` shape at {f(B['rows'])} rows (`orders_1m`), best of {B['repeats']}. Sluice serves the "
      "`bench_bi` feed (a `sluice.sql` passthrough). References in the same run: PostgreSQL's own "
      "`psql \\copy (select * from orders_1m) to stdout` (the practical limit of getting rows out of a "
      "database) and psycopg reading PostgreSQL directly; and what an analyst writes by hand, a Flask + psycopg "
      "endpoint returning `jsonify` of the rows (gunicorn, sync workers).")
    w("")
    w("| path | rows | seconds | peak RSS of the server tree, MB | bytes |")
    w("|---|---:|---:|---:|---:|")
    w(f"| PostgreSQL `\\copy … to stdout` | 1,000,000 | {B['pg_copy_s']:.3f} | | |")
    w(f"| psycopg reading PostgreSQL directly | 1,000,000 | {B['psycopg_direct_s']:.3f} | | |")
    if "psycopg_copy_direct_s" in B:
        w(f"| psycopg `cursor.copy()` (`COPY … TO STDOUT`) from PostgreSQL directly | 1,000,000 | {B['psycopg_copy_direct_s']:.3f} | | |")
    if "pg_psql_select_s" in B:
        w(f"| psql `select *` from PostgreSQL directly (unaligned text) | 1,000,000 | {B['pg_psql_select_s']:.3f} | | |")
    fl = B["flask_json"]
    w(f"| Flask + psycopg + `jsonify` | 1,000,000 | {fl['best_s']:.3f} | {f(fl['peak_rss_mb'])} | {f(fl['bytes'])} |")
    for size, n in (("100k", 100_000), ("1m", 1_000_000)):
        r = B.get(f"sluice_odata_{size}")
        if r:
            w(f"| **Sluice OData**, whole entity set, one response | {f(n)} | {r['best_s']:.3f} | {f(r['peak_rss_mb'])} | {f(r['bytes'])} |")
    for size, n in (("100k", 100_000), ("1m", 1_000_000)):
        r = B.get(f"sluice_pgwire_{size}")
        if r:
            w(f"| **Sluice PostgreSQL wire**, psycopg `select *` | {f(r['rows'])} | {r['best_s']:.3f} | {f(r['peak_rss_mb'])} | |")
    ps = B.get("sluice_pgwire_psql_1m")
    if ps:
        w(f"| **Sluice PostgreSQL wire**, psql `select *` (unaligned text) | 1,000,000 | {ps['best_s']:.3f} | {f(ps['peak_rss_mb'])} | |")
    pc = B.get("sluice_pgwire_copy_1m")
    if pc:
        w(f"| **Sluice PostgreSQL wire**, psycopg `cursor.copy()` (`COPY … TO STDOUT`) | {f(pc['rows'])} | {pc['best_s']:.3f} | {f(pc['peak_rss_mb'])} | |")
    w("")
    od = B.get("sluice_odata_1m")
    if od:
        ratio = fl["best_s"] / od["best_s"]
        w(f"Target ≥ 5× faster than the Flask approach over OData: {ratio:.1f}× — **{'met' if ratio >= 5 else 'not met'}**.")
    pw = B.get("sluice_pgwire_1m")
    if pw and ps:
        ratio = ps["best_s"] / B["pg_copy_s"]
        w(f"Target no slower than 2× `\\copy` over the PostgreSQL wire, read by psql (the client `\\copy` is): "
          f"{ratio:.2f}× the `\\copy` time — **{'met' if ratio <= 2 else 'not met'}**. The same psql reading "
          f"PostgreSQL directly takes {B['pg_psql_select_s'] / B['pg_copy_s']:.2f}× `\\copy`. Read by psycopg, Sluice "
          f"takes {pw['best_s'] / B['pg_copy_s']:.2f}× `\\copy` and {pw['best_s'] / B['psycopg_direct_s']:.2f}× psycopg "
          f"reading PostgreSQL directly: there the Python driver, not the server, sets the pace.")
    elif pw:
        ratio = pw["best_s"] / B["pg_copy_s"]
        w(f"Target no slower than 2× `\\copy` over the PostgreSQL wire: {ratio:.2f}× the `\\copy` time — "
          f"**{'met' if ratio <= 2 else 'not met'}**.")
    else:
        w(f"PostgreSQL wire: not measured in this run ({B.get('sluice_pgwire_error', 'no result')[:200]}).")
    if pc:
        ratio = pc["best_s"] / B["pg_copy_s"]
        direct = B.get("psycopg_copy_direct_s")
        w(f"Read by psycopg the fast way, `cursor.copy()` of `COPY (select …) TO STDOUT`: {ratio:.2f}× the "
          f"`\\copy` time — **{'met' if ratio <= 2 else 'not met'}**"
          + (f"; psycopg's `cursor.copy()` from PostgreSQL directly takes {direct / B['pg_copy_s']:.2f}× `\\copy`, "
             f"Sluice {pc['best_s'] / direct:.2f}× that" if direct else "")
          + ".")
    small, big = B.get("sluice_odata_100k"), B.get("sluice_odata_1m")
    if small and big:
        w(f"Memory as the row count grows 10×: OData {f(small['peak_rss_mb'])} → {f(big['peak_rss_mb'])} MB"
          + (f"; PostgreSQL wire {f(B['sluice_pgwire_100k']['peak_rss_mb'])} → {f(pw['peak_rss_mb'])} MB" if pw and B.get('sluice_pgwire_100k') else "")
          + ".")
    w("")
    return o


if not H:
    # A partial run (BENCH_SUITES=bi): just that section, for a look; BENCHMARKS.md needs both.
    print("\n".join(bi_section(R["bi"])))
    sys.exit(0)

sweep = H["sluice"]
best_key = max(sweep, key=lambda k: sweep[k]["req_per_s"])
best = sweep[best_key]
flask, fast = H["flask"], H["fastapi"]
cached = H.get("sluice_cached")

out = []
w = out.append
w("# Benchmarks: Sluice vs Flask + gunicorn vs FastAPI + uvicorn")
w("")
w(f"Generated by [`bench/run`](bench/run) from [`{rel}`]({rel}) — run {R['started']} to {R['finished']}. "
  "Regenerate with `bench/run` (about 6 minutes after the build, loopback only, cleans up after itself). "
  "These are the numbers of one run on one small shared machine: read them as orders of magnitude, "
  "not as a spec sheet.")
w("")
w("## Machine")
w("")
w("| | |")
w("|---|---|")
w(f"| CPU | {M['nproc']} cores, {M['cpu']} |")
w(f"| RAM | {M['ram_gb']} GB |")
w(f"| OS | {M['os']}, kernel {M['kernel']} |")
w(f"| Load average (1/5/15 min) | start {' / '.join(map(str, R['load_start']))}, end {' / '.join(map(str, R['load_end']))} |")
w(f"| Python | {M['python']}: flask {V['flask']} (werkzeug {V['werkzeug']}), gunicorn {V['gunicorn']}, "
  f"fastapi {V['fastapi']} (starlette {V['starlette']}), uvicorn {V['uvicorn']} (uvloop {V['uvloop']}, httptools {V['httptools']}), "
  f"psycopg {V['psycopg']} (binary), pyarrow {V['pyarrow']} |")
w(f"| Sluice | commit `{M['sluice_commit']}`{' (with uncommitted changes)' if M['sluice_tree_dirty'] else ''}, release build, {M['rustc']} |")
w(f"| PostgreSQL | {M['postgres']} on 127.0.0.1:5432 |")
w(f"| Load generator | {M['wrk']}, curl |")
w("")
w("The machine is shared with other engineers (who may be compiling); the load average above says how "
  "quiet it was (the end value includes the benchmark's own load: it keeps both cores busy). Client, server and PostgreSQL all share the same cores, as on a laptop.")
w("")
w("## Method")
w("")
fl, fa = S["flask"], S["fastapi"]
w("The same two endpoints, served three ways, one server at a time on the same machine (nothing pinned):")
w("")
w(f"- **Flask + gunicorn**: [`bench/apps/flask_app.py`](bench/apps/flask_app.py), {fl['workers']} `{fl['worker_class']}` workers "
  "— gunicorn's documented starting point of `(2 × cores) + 1`. gunicorn's access log is off by default.")
w(f"- **FastAPI + uvicorn**: [`bench/apps/fastapi_app.py`](bench/apps/fastapi_app.py), `--workers {fa['workers']}` (one per core), "
  "`uvicorn[standard]` (uvloop + httptools) and `--no-access-log` — the fastest ordinary uvicorn setup.")
w("- **Sluice**: `sluice up` with the feeds in [`bench/feeds/`](bench/feeds), called with a Bearer key (the "
  "Python apps have no auth at all, so Sluice pays for key checks and invocation records the others don't). "
  "The example feeds `sluice up` deploys are deleted first so their workers don't count in Sluice's memory.")
w("")
w("**hello** returns `[{\"greeting\": \"Hello, world!\", \"length\": 5}]` as JSON. "
  f"`wrk -t2 -c32 -d{R['wrk']['seconds']}s --latency` after a {R['wrk']['warmup_s']} s warm-up run (long enough for Sluice's pool to grow to `SLUICE_WORKERS_MAX` workers; gunicorn and uvicorn start all of theirs up front). "
  "For Sluice it is a plain Python feed without cache, so every request is a round trip to a Python worker; "
  "`SLUICE_WORKERS_MAX` (worker processes per feed) is swept and each value reported. "
  "The same feed with `@sluice.feed(cache=\"5m\")` is a separate row: a product feature, not the headline.")
w("")
w("**extract** is `select * from orders` on a throwaway database of 100,000 rows "
  "([`bench/setup.sql`](bench/setup.sql): bigint id, text customer, numeric(10,2) amount, timestamptz, "
  "text status, double precision score), returned as CSV (header + rows) and as a JSON array of objects. "
  "The Python apps use psycopg 3 and the csv module, **building the whole body in memory** (`io.StringIO`) "
  "before returning it, as most such code does; JSON is `jsonify` / `JSONResponse` of a list of dicts with "
  "`Decimal → float` and `datetime → isoformat()` done in a comprehension (FastAPI's `jsonable_encoder` would be slower). "
  "Sluice's feed is `return sluice.sql(\"benchpg\", \"select * from orders\")`, which Sluice runs natively: "
  "rows stream from PostgreSQL to the client through Rust without passing through Python.")
w("")
w("- time: `curl -s -o /dev/null -w %{time_total}` for one full download, best of 3 after one warm-up download;")
w("- memory: the sum of VmRSS over the server's whole process tree (gunicorn master + workers, uvicorn "
  "supervisor + workers, Sluice + its Python workers), sampled every 50 ms during those 3 downloads; peak reported;")
w("- concurrent: 4 downloads started together, wall time until the last one ends (best of 2), and peak tree RSS.")
w("")
w("Ratios are Sluice against each alternative: throughput as a multiplier (>1 is Sluice ahead); "
  "time as \"N× faster/slower\"; memory as \"N× less/more memory\".")
w("")

# ------------------------------------------------------------------ hello
w("## hello: requests per second")
w("")
ROUNDS = R.get("hello_rounds", 1)
if ROUNDS > 1:
    w(f"Each row is the median of {ROUNDS} interleaved rounds (every contender once per round, one server at a "
      "time), so slow minutes on the machine fall on all of them alike; the last column lists every round's req/s. "
      "The cached row is a single run.")
    w("")
w("| server | req/s | p50 ms | p99 ms | errors | Sluice ÷ Flask | Sluice ÷ FastAPI | rounds, req/s |")
w("|---|---:|---:|---:|---:|---:|---:|---|")


def hello_row(label, r, ratio=True, sluice=None):
    sl = sluice or r
    errs = r.get("non_2xx", 0) + (1 if "socket_errors" in r else 0)
    cells = [label, f(r["req_per_s"]), f(r["p50_ms"], 2), f(r["p99_ms"], 2), str(r.get("non_2xx", 0))
             + (f" ({r['socket_errors']})" if "socket_errors" in r else "")]
    if ratio:
        cells += [times_ratio(sl["req_per_s"], flask["req_per_s"]), times_ratio(sl["req_per_s"], fast["req_per_s"])]
    else:
        cells += ["", ""]
    cells.append(", ".join(f(x) for x in r.get("rounds_req_per_s", [])))
    w("| " + " | ".join(cells) + " |")


hello_row(f"Flask + gunicorn ({fl['workers']} sync workers)", flask, ratio=False)
hello_row(f"FastAPI + uvicorn ({fa['workers']} workers)", fast, ratio=False)
for k, r in sweep.items():
    mark = " ← headline" if k == best_key else ""
    hello_row(f"**Sluice, uncached**, SLUICE_WORKERS_MAX={k.split('=')[1]}{mark}", r)
if cached:
    hello_row("Sluice, `cache=\"5m\"` (served from the result cache; not comparable)", cached)
w("")
ratio_flask = best["req_per_s"] / flask["req_per_s"]
w(f"Headline (uncached, best `SLUICE_WORKERS_MAX` = {best_key.split('=')[1]}): **{ratio_flask:.2f}× Flask + gunicorn**, "
  f"**{best['req_per_s'] / fast['req_per_s']:.2f}× FastAPI + uvicorn**. "
  f"Target ≥ 3× Flask + gunicorn: **{'met' if ratio_flask >= 3 else 'not met'}**.")
w("")
drops = {k: r.get("invocation_records_dropped", 0) for k, r in list(sweep.items()) + [("cached", cached or {})]}
w("Invocation records dropped by Sluice, over all rounds of each configuration (`sluice_invocation_records_dropped_total` in `/metrics`): "
  + ", ".join(f"{k}: {f(v)}" for k, v in drops.items()) + ".")
w("")

# ------------------------------------------------------------------ extract
w("## extract: 100,000 rows")
w("")
for fmt in ("csv", "json"):
    fx, fa_, sx = X["flask"][fmt], X["fastapi"][fmt], X["sluice"][fmt]
    w(f"### {fmt.upper()}")
    w("")
    w("| server | bytes | one download, s | peak RSS, MB | 4 parallel, s | peak RSS (4 parallel), MB |")
    w("|---|---:|---:|---:|---:|---:|")
    rows = [("Flask + gunicorn", fx), ("FastAPI + uvicorn", fa_), ("**Sluice** (passthrough)", sx)]
    if "sluice_python" in X:
        rows.append(("Sluice, same extract written in Python (`sluice.connect`, list of dicts) — not the headline",
                     X["sluice_python"][fmt]))
    for label, r in rows:
        w(f"| {label} | {f(r['bytes'])} | {r['best_s']:.3f} | {f(r['peak_rss_mb'])} | {r['parallel_best_s']:.3f} | "
          f"{f(r['parallel_peak_rss_mb'])} |")
    w("")
    w("| Sluice (passthrough) vs | one download | memory | 4 parallel | memory (4 parallel) |")
    w("|---|---|---|---|---|")
    for label, r in (("Flask + gunicorn", fx), ("FastAPI + uvicorn", fa_)):
        w(f"| {label} | {faster(r['best_s'], sx['best_s'])} | {less_mem(r['peak_rss_mb'], sx['peak_rss_mb'])} | "
          f"{faster(r['parallel_best_s'], sx['parallel_best_s'])} | "
          f"{less_mem(r['parallel_peak_rss_mb'], sx['parallel_peak_rss_mb'])} |")
    w("")

w("Peak RSS (VmHWM) by process role after each server's extract runs (cumulative over CSV then JSON):")
w("")
w("| server | role | processes | sum of VmHWM, MB | largest, MB |")
w("|---|---|---:|---:|---:|")
for key, label in (("flask", "Flask + gunicorn"), ("fastapi", "FastAPI + uvicorn"), ("sluice", "Sluice"),
                   ("sluice_python", "Sluice + Python extract")):
    if key not in X:
        continue
    for role, e in X[key]["json"].get("hwm_by_role_after", {}).items():
        w(f"| {label} | `{role}` | {e['processes']} | {f(e['hwm_mb'])} | {f(e['max_hwm_mb'])} |")
w("")

t_csv = X["flask"]["csv"]["best_s"] / X["sluice"]["csv"]["best_s"]
t_json = X["flask"]["json"]["best_s"] / X["sluice"]["json"]["best_s"]
w(f"Target ≥ 10× Flask + gunicorn on the extract with passthrough: CSV {t_csv:.1f}×, JSON {t_json:.1f}× "
  f"(one download) — CSV **{'met' if t_csv >= 10 else 'not met'}**, JSON **{'met' if t_json >= 10 else 'not met'}**.")
w("")

if "bi" in R:
    out.extend(bi_section(R["bi"]))
else:
    w("## 1M rows to a BI tool: OData and the PostgreSQL wire")
    w("")
    w("Not in this run (`BENCH_SUITES` left the `bi` suite out). `BENCH_SUITES=bi bench/run` measures it.")
    w("")

# ------------------------------------------------------------------ Kubernetes (measured by the tests, committed)
# bench/run does not build images or run an operator; the numbers come from the tests that
# measure them (see "command"), recorded in bench/results/kubernetes.json with the API server
# and registry they ran against.
kube_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "kubernetes.json")
if os.path.exists(kube_path):
    K = json.load(open(kube_path))
    w("## Kubernetes: image builds and reconciles")
    w("")
    w(f"Not measured by `bench/run`: from `bench/results/kubernetes.json` ({K['measured_at']}, {K['machine']}).")
    w("")
    w("| what | measured | target | met | against | command |")
    w("|---|---:|---:|---|---|---|")
    for key in ("image_build", "image_build_in_pod", "reconcile"):
        e = K.get(key)
        if e is None:
            continue
        w(f"| {e['what']} | {e['seconds']:.2f} s | ≤ {e['target_s']:g} s | "
          f"**{'met' if e['seconds'] <= e['target_s'] else 'not met'}** | {e['against']}"
          f"{' (measured ' + e['measured_at'] + ')' if 'measured_at' in e else ''} | `{e['command']}` |")
    w("")
    for note in K.get("notes", []):
        w(f"- {note}")
    w("")

# ------------------------------------------------------------------ discussion (hand-written, see bench/discussion.md)
disc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "discussion.md")
if os.path.exists(disc):
    w(open(disc).read().rstrip())
    w("")
print("\n".join(out))
