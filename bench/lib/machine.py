"""Describes the machine and the software under test as JSON (for the results file)."""

import json
import os
import platform
import subprocess
import sys
from importlib import metadata

root, binary = sys.argv[1], sys.argv[2]


def run(*cmd, cwd=None):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, timeout=30)
        return p.stdout.strip()
    except Exception:
        return ""


cpu = ""
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
mem_kb = 0
with open("/proc/meminfo") as f:
    for line in f:
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
os_name = ""
try:
    with open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
except OSError:
    pass

versions = {}
for pkg in ("flask", "werkzeug", "gunicorn", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "psycopg",
            "psycopg-binary", "pyarrow"):
    try:
        versions[pkg] = metadata.version(pkg)
    except metadata.PackageNotFoundError:
        versions[pkg] = None

dirty = run("git", "status", "--porcelain", "--untracked-files=no", "--", "crates", "python", "Cargo.toml",
            "Cargo.lock", cwd=root)
print(json.dumps({
    "nproc": os.cpu_count(),
    "cpu": cpu,
    "ram_gb": round(mem_kb / 1024 / 1024, 1),
    "os": os_name,
    "kernel": platform.release(),
    "python": platform.python_version(),
    "versions": versions,
    "wrk": run("wrk", "-v").splitlines()[0] if run("wrk", "-v") else "",
    "postgres": run("psql", "-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", "show server_version"),
    "rustc": run("rustc", "--version"),
    "sluice_commit": run("git", "rev-parse", "--short=12", "HEAD", cwd=root),
    "sluice_tree_dirty": bool(dirty),
    "sluice_dirty_files": dirty.splitlines(),
}, indent=1))
