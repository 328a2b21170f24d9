"""Open the built documentation in headless Chromium, as a reader meets it.

Serves the built HTML on localhost and loads, in headless Chromium, the index,
an API page, a gallery page with its plot, and the search page, which must
find ``TransferClassifier`` (Sphinx's search runs in JavaScript, so the page is
given virtual time to run it). Each check prints one line; the exit status is
the number of failed checks. Needs Debian's ``chromium`` package::

    python doc/check_site.py [doc/_build/html]
"""

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def find_chromium():
    """Return the path of the Chromium executable, or exit saying how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check_site: no chromium found; install it with apt-get install chromium")


def dump_dom(chromium, url, virtual_time_ms=5000):
    """Return the DOM of ``url`` after its scripts ran for ``virtual_time_ms``."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={virtual_time_ms}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if done.returncode != 0:
        msg = f"chromium exited with {done.returncode} on {url}: {done.stderr[-2000:]}"
        raise RuntimeError(msg)
    return done.stdout


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def serve(folder):
    """Serve ``folder`` on a free localhost port; return the server."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def checks(base, chromium):
    """Yield ``(name, problem or None)`` for each page a reader opens."""
    dom = dump_dom(chromium, f"{base}/index.html")
    yield (
        "index: title and the user guide's link",
        None
        if "Transfer learning for PyTorch networks" in dom
        and "user_guide/index.html" in dom
        else "the index lacks its pitch or its link to the user guide",
    )

    dom = dump_dom(chromium, f"{base}/generated/sktransfer.TransferClassifier.html")
    yield (
        "API page: TransferClassifier with its methods",
        None
        if all(
            f'id="sktransfer.TransferClassifier.{method}"' in dom
            for method in ("fit_source", "fit", "predict_proba")
        )
        else "the API page of TransferClassifier lacks fit_source, fit or predict",
    )

    page = "auto_examples/compare_methods.html"
    dom = dump_dom(chromium, f"{base}/{page}")
    image = "_images/sphx_glr_compare_methods_001.png"
    problem = None
    if image not in dom:
        problem = f"the gallery page {page} shows no {image}"
    else:
        with urllib.request.urlopen(f"{base}/{image}", timeout=30) as response:
            data = response.read()
        if not data.startswith(b"\x89PNG") or len(data) < 5000:
            problem = f"{image} is not a drawn PNG ({len(data)} bytes)"
    yield "gallery page: compare_methods and its plot", problem

    dom = dump_dom(chromium, f"{base}/search.html?q=TransferClassifier", 20000)
    found = "generated/sktransfer.TransferClassifier.html" in dom
    yield (
        "search: TransferClassifier found",
        None if found else "the search page found no page of TransferClassifier",
    )


def main(argv=None):
    """Run the checks on a built site and print one line per check."""
    parser = argparse.ArgumentParser(description="Open the built site in Chromium.")
    parser.add_argument("html", nargs="?", default="doc/_build/html")
    args = parser.parse_args(argv)
    folder = Path(args.html)
    if not (folder / "index.html").exists():
        sys.exit(f"check_site: no index.html in {folder}; build the documentation")
    chromium = find_chromium()
    server = serve(folder)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    failed = passed = 0
    try:
        for name, problem in checks(base, chromium):
            if problem is None:
                passed += 1
                print(f"ok      {name}")
            else:
                failed += 1
                print(f"FAILED  {name}: {problem}")
    finally:
        server.shutdown()
    print(f"check_site: {passed} passed, {failed} failed")
    return failed


if __name__ == "__main__":
    sys.exit(main())
