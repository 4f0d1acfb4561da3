"""Looks at the built docs site in a real headless browser.

    make site-check   # after `make docs`

Renders the home page, a notebook and the benchmarks page with headless
Chromium to PNG screenshots (in .venv/site-shots/) and fails, naming the
page, when a page renders blank, an image it references is missing from
the site, or a notebook page carries no rendered output image.
"""

import html.parser
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE = os.path.join(ROOT, ".venv", "site")
SHOTS = os.path.join(ROOT, ".venv", "site-shots")
PAGES = {
    "home": "index.html",
    "notebook": "notebooks/01_sentiment_in_ten_minutes/index.html",
    "benchmarks": "benchmarks/index.html",
}


class Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


def missing_images(page):
    parser = Images()
    with open(os.path.join(SITE, page), encoding="utf-8") as f:
        parser.feed(f.read())
    missing = []
    for src in parser.sources:
        if src.startswith(("data:", "http://", "https://")):
            continue
        path = os.path.normpath(
            os.path.join(SITE, os.path.dirname(page), src.split("#")[0])
        )
        if not os.path.isfile(path):
            missing.append(src)
    return parser.sources, missing


def browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit(
        "check_site: no Chromium found; install it (`apt-get install "
        "chromium`, done by `make setup`)"
    )


def screenshot(chromium, page, out):
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                "--window-size=1280,1600",
                "--virtual-time-budget=5000",
                f"--screenshot={out}",
                "file://" + os.path.join(SITE, page),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def blank(png):
    """Whether a screenshot is (nearly) one colour: nothing rendered."""
    pixels = np.asarray(Image.open(png).convert("L"), "float32")
    return pixels.std() < 5 or (pixels < 128).mean() < 0.002


def main():
    chromium = browser()
    os.makedirs(SHOTS, exist_ok=True)
    problems = []
    for name, page in PAGES.items():
        if not os.path.isfile(os.path.join(SITE, page)):
            problems.append(f"{name}: {page} was not built (run make docs)")
            continue
        sources, missing = missing_images(page)
        problems += [f"{name}: image {src} is missing" for src in missing]
        if name == "notebook" and not any(
            s.startswith("data:image/png") for s in sources
        ):
            problems.append(f"{name}: no rendered output image (plots)")
        out = os.path.join(SHOTS, f"{name}.png")
        screenshot(chromium, page, out)
        if blank(out):
            problems.append(f"{name}: the page renders blank ({out})")
        print(f"{name}: {len(sources)} images, screenshot {out}")
    if problems:
        sys.exit("check_site:\n  " + "\n  ".join(problems))


if __name__ == "__main__":
    main()
