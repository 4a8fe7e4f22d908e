"""A real TensorBoard on a loopback port and Debian's Chromium driven headless by selenium, for the
browser tests: what a person sees, not what the files hold.

Where neither a browser nor selenium is there, :func:`need_browser` skips with a one-line reason;
in CI (``CI=true``) it fails instead, so a missing browser is never a silent pass.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from PIL import Image

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # WebGL (the projector) drawn in software: without these it reads "WebGL not enabled"
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]

#: Every element matching a CSS selector, in the document and inside every shadow root.
DEEP_QUERY = """
const selector = arguments[0], found = [];
function walk(root) {
  if (root.shadowRoot) walk(root.shadowRoot);
  found.push(...root.querySelectorAll(selector));
  for (const element of root.querySelectorAll('*')) if (element.shadowRoot) walk(element.shadowRoot);
}
walk(arguments[1] || document);
return found;
"""

#: The text a person reads in an element, shadow roots included.
DEEP_TEXT = """
function text(node) {
  let out = node.shadowRoot ? text(node.shadowRoot) : '';
  for (const child of node.childNodes) {
    if (child.nodeType === 3) out += child.textContent + ' ';
    else if (child.nodeType === 1 && !['STYLE', 'SCRIPT'].includes(child.tagName)) out += text(child);
  }
  return out;
}
return text(arguments[0] || document.body).replace(/\\s+/g, ' ');
"""

T = TypeVar("T")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if chromium() is None:
        return "no Chromium (apt-get install chromium chromium-driver)"
    if shutil.which("chromedriver") is None and not Path("/usr/bin/chromedriver").exists():
        return "no chromedriver (apt-get install chromium-driver)"
    return None


def need_browser() -> None:
    """Skip (fail in CI) when the browser tests cannot run."""
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    pytest.skip(f"browser tests: {reason}")


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return None


@contextmanager
def browser(width: int = 1600, height: int = 1000, downloads: Path | None = None) -> Iterator[Any]:
    """A headless Chromium (a fresh profile) under selenium's control; it keeps the pages' console messages
    (:func:`console_errors`) and saves downloads into ``downloads`` without asking."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium() or "chromium"
    for flag in [*FLAGS, f"--window-size={width},{height}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if downloads is not None:
        prefs = {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        options.add_experimental_option("prefs", prefs)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()


@contextmanager
def tensorboard(log_dir: str | Path, featviz_tab: bool = False) -> Iterator[str]:
    """``tensorboard --logdir log_dir`` on a free loopback port; yields its address. With ``featviz_tab``, its
    plugins include the FEATVIZ tab of this checkout even where the installed package predates its entry point."""
    launcher = [str(Path(__file__).with_name("tensorboard_featviz.py"))] if featviz_tab else ["-m", "tensorboard.main"]
    command = [sys.executable, *launcher, "--logdir", str(log_dir), "--host", "127.0.0.1"]
    process = subprocess.Popen([*command, "--port", "0", "--load_fast", "false"], stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline() if process.stderr else ""
            assert line or process.poll() is None, "tensorboard exited before serving"
            match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = match.group(1) if match else None
        assert url, "tensorboard did not report its address"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def console_errors(driver: Any) -> list[str]:
    """The console's error messages (level SEVERE) since the last call, of every page and frame."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@contextmanager
def mlflow_ui(store: str) -> Iterator[str]:
    """``mlflow ui`` on the tracking store ``store`` (``sqlite:///...``), on a free loopback port; yields its
    address once it answers."""
    import socket
    import urllib.request

    with socket.socket() as probe:  # a port free now (the server binds it a moment later)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1"]
    # its own process group: the server's workers end with it
    launch = [*command, "--port", str(port), "--workers", "1"]
    process = subprocess.Popen(launch, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert process.poll() is None, "mlflow ui exited before serving"
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                return bool(response.status == 200)

        wait_for(answers, "mlflow ui to answer", timeout=180)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def wait_for(check: Callable[[], T], what: str, timeout: float = 90.0) -> T:
    """Poll ``check`` until it returns something truthy (a page still loading raises or returns nothing)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # the page is not there yet
            last = error
        time.sleep(0.1)  # a poll is one cheap round trip; a longer pause only adds to each wait
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


def deep(driver: Any, selector: str, root: Any = None) -> list[Any]:
    return list(driver.execute_script(DEEP_QUERY, selector, root))


def deep_text(driver: Any, root: Any = None) -> str:
    return str(driver.execute_script(DEEP_TEXT, root))


def coloured_pixels(png: bytes, min_saturation: int = 40) -> int:
    """How many pixels of a screenshot are coloured (max - min channel above ``min_saturation``)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > min_saturation).sum())
