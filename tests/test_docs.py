"""The documentation site builds with ``mkdocs build --strict``.

Strict mode turns every warning into an error: a broken link, a page missing
from the nav, an API entry (``::: numbaconv.name``) that no longer exists or
whose docstring cannot be rendered.  CI installs the ``test`` extra, which
includes MkDocs, so there the build must run; elsewhere a missing MkDocs skips.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if importlib.util.find_spec("mkdocs") is None and not os.environ.get("CI"):
        pytest.skip('mkdocs is not installed (pip install ".[docs]")')
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_mkdocs_build_strict(site):
    for page in ("index.html", "layouts/index.html", "dispatcher/index.html",
                 "performance/index.html", "threads/index.html", "training/index.html",
                 "cli/index.html", "troubleshooting/index.html", "api/conv/index.html"):
        assert (site / page).is_file(), page


@pytest.mark.parametrize("page, names", [
    ("api/conv", ["conv2d", "conv2d_with", "im2col", "col2im"]),
    ("api/dispatcher", ["explain", "Plan", "cache_info", "cache_clear", "CacheInfo"]),
    ("api/threads", ["threads", "set_num_threads", "get_num_threads"]),
    ("api/training", ["conv2d_backward", "conv2d_grad_input", "conv2d_grad_weight",
                      "conv_transpose2d", "Conv2d", "ConvTranspose2d"]),
    ("api/bench", ["bench.load_suite", "bench.plot", "bench.measure", "cli.main"]),
    ("api/nd", ["conv1d", "conv3d", "conv1d_backward", "conv3d_backward", "conv_transpose1d",
                "conv_transpose3d", "Conv1d", "Conv3d", "ConvTranspose1d", "ConvTranspose3d"]),
])
def test_api_pages_render_the_docstrings(site, page, names):
    html = (site / page / "index.html").read_text()
    for name in names:
        assert f'id="numbaconv.{name}"' in html, name
    assert "Examples" in html or page == "api/training"


def test_layout_figure_is_committed_and_small():
    figure = ROOT / "docs" / "img" / "layouts-resnet50.png"
    assert figure.read_bytes().startswith(b"\x89PNG") and figure.stat().st_size < 200_000
    assert "img/layouts-resnet50.png" in (ROOT / "docs" / "layouts.md").read_text()
