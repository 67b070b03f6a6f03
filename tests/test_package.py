"""The Debian package (issue 8): built with Debian's tools, installed, run, queried, purged;
and the manual pages, clean under mandoc and groff."""

from __future__ import annotations

import os
import shutil
import sys
import subprocess
import urllib.request

import pytest

from harness import CONVERGE_TIMEOUT, ROOT, HaproxyNode, TableSpec, fresh_loopback, haproxy_binaries, wait_for, can_query

PROGRAM = "/opt/hapee-extras/sbin/hapee-stktagg"
#: The configuration package's modules: every one must be installed (a subpackage that
#: setup.cfg's package discovery missed would break the installed program's imports).
STATIC_FILES = sorted(p.name for p in (ROOT / "stktagg" / "static").iterdir())
CONFIG_MODULES = sorted(p.name for p in (ROOT / "stktagg" / "config").glob("*.py"))
CONFIG = "/etc/hapee-extras/hapee-stktagg.cfg"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="installing a package needs root (CI runs as root)")


def run(*argv: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.mark.parametrize("page", ["man/hapee-stktagg.8", "man/hapee-stktagg.cfg.5"])
def test_manual_pages_are_lint_clean(page):
    if not shutil.which("mandoc"):
        pytest.skip("mandoc is not installed")
    lint = run("mandoc", "-T", "lint", page, cwd=ROOT)
    # Whether the page's date is "in the future" depends on this machine's clock, not on
    # the page: that one warning is not a lint finding (mandoc exits 2 for it, as for any warning).
    lines = (lint.stdout + lint.stderr).splitlines()
    findings = [line for line in lines if "WARNING: date in the future" not in line]
    assert findings == [], lint
    assert lint.returncode == (0 if lines == [] else 2), lint
    groff = run("groff", "-man", "-ww", "-Tutf8", page, cwd=ROOT, env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert groff.returncode == 0 and groff.stderr == ""
    rendered = run("man", "-l", page, cwd=ROOT, env=dict(os.environ, MANPAGER="cat", PAGER="cat"))
    assert rendered.returncode == 0 and "hapee-stktagg" in rendered.stdout


@needs_root
def test_package_builds_installs_runs_and_purges(tmp_path):
    built = run("bash", "contrib/build-deb.sh", str(tmp_path), cwd=ROOT, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    deb = built.stdout.strip().splitlines()[-1]
    listing = run("dpkg-deb", "--contents", deb).stdout  # tar's "perms owner size date time name"
    _check_python_files([line.split(None, 5)[5].split(" -> ")[0] for line in listing.splitlines() if line.strip()])
    lint = run("lintian", "--fail-on", "error,warning", deb)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    installed = run("apt-get", "install", "-y", "-qq", deb, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    try:
        assert os.access(PROGRAM, os.X_OK) and os.path.isfile(CONFIG)
        assert "/etc/hapee-extras/hapee-stktagg.cfg" in run("dpkg-query", "-W", "-f", "${Conffiles}",
                                                              "hapee-extras-stktagg").stdout
        assert run("getent", "passwd", "hapee-stktagg").returncode == 0  # the service's user
        check = run(PROGRAM, "-c", "-f", CONFIG)
        assert check.returncode == 0 and "valid" in check.stdout
        assert "Configuration file is valid" in check.stdout
        _run_installed_program_against_haproxy(tmp_path)
    finally:
        purged = run("apt-get", "purge", "-y", "-qq", "hapee-extras-stktagg",
                     env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not os.path.exists(PROGRAM) and not os.path.exists(CONFIG)
    assert run("dpkg", "-s", "hapee-extras-stktagg").returncode != 0


def _check_python_files(paths: list[str]) -> None:
    """Installed files: the whole stktagg package with its config subpackage, not the load generator."""
    assert "__init__.py" in CONFIG_MODULES and "_parser.py" in CONFIG_MODULES
    ours = sorted(p for p in paths if "/stktagg/" in p and p.endswith(".py"))
    for module in CONFIG_MODULES:
        assert any(p.endswith(f"/stktagg/config/{module}") for p in ours), (module, ours)
    assert not [p for p in ours if p.endswith("/bench.py")], ours  # contrib/bench.py is not installed
    for name in STATIC_FILES:  # the dashboard's page, script and style (package data)
        assert any(p.endswith(f"/stktagg/static/{name}") for p in paths), (name, ours)


def _run_installed_program_against_haproxy(tmp_path) -> None:
    address = fresh_loopback()
    table = TableSpec("mytable", "ip", "http_req_cnt,http_req_rate(10s)", "x-ip", "req.hdr_ip(x-ip)")
    node = HaproxyNode("node1", haproxy_binaries()[0][1], address, 18081, 11001, tmp_path, [table],
                       [("AGGR", address, 11100)])
    sock = tmp_path / "installed.sock"
    cfg = tmp_path / "installed.cfg"
    cfg.write_text(f"global\n    stats socket {sock}\n    http {address}:11109\naggregations AGGR\n    peer AGGR {address}:11100 local\n"
                   f"    peer node1 {address}:11001\n    from .local to .aggr\n")
    log = open(tmp_path / "installed.log", "wb")
    daemon = subprocess.Popen([PROGRAM, "-f", str(cfg)], stdout=log, stderr=log)  # the installed program
    try:
        wait_for(lambda: can_query(sock), what="the installed daemon")
        node.start()
        for _ in range(3):
            assert node.request({"x-ip": "198.51.100.9"}) == 200
        wait_for(lambda: node.table("mytable.aggr").get("198.51.100.9", {}).get("http_req_cnt") == "3",
                 timeout=CONVERGE_TIMEOUT, what="the installed daemon's sum on the node")
        answer = run("socat", "stdio", f"UNIX-CONNECT:{sock}", input="show table AGGR mytable.aggr\n").stdout
        assert answer.startswith("key=198.51.100.9 http_req_cnt=3 ")
        for path, needle in (("/", b"dashboard.js"), ("/dashboard.js", b"textContent"), ("/dashboard.css", b"body")):
            with urllib.request.urlopen(f"http://{address}:11109{path}", timeout=10) as page:  # installed files
                assert page.status == 200 and needle in page.read(), path
    finally:
        node.stop()
        daemon.terminate()
        daemon.wait(10)
        log.close()


def test_pip_install_gives_a_console_script(tmp_path):
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", str(venv)).returncode == 0
    # From a copy without build litter: pip builds in the source tree, and setuptools'
    # build/lib keeps modules that were since moved or deleted (it would ship them).
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache"))
    installed = run(str(venv / "bin/pip"), "install", "-q", str(source), timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    _check_python_files([str(p) for p in venv.rglob("*") if p.is_file()])
    version = run(str(venv / "bin/hapee-stktagg"), "-v")
    assert version.returncode == 0 and version.stdout.startswith("hapee-stktagg version ")
    check = run(str(venv / "bin/hapee-stktagg"), "-c", "-f", str(ROOT / "contrib/hapee-stktagg.cfg"))
    assert check.returncode == 0
