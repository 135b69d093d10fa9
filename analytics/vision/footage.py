"""Real CCTV footage for tests and the demo: Debian's ``opencv-doc`` package ships
``examples/data/vtest.avi`` (an elevated view of a walkway, 768×576, 795 frames).

It is fetched once with ``apt-get download`` + ``dpkg -x`` (no root needed) into the cache
directory (``IOC_CACHE_DIR``, default ``/var/cache/ioc``, else ``var/cache`` in the checkout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from core.errors import IOCError

PACKAGE = "opencv-doc"
MEMBER = "usr/share/doc/opencv-doc/examples/data/vtest.avi"
ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The first writable of IOC_CACHE_DIR, /var/cache/ioc, <checkout>/var/cache."""
    candidates = [os.environ.get("IOC_CACHE_DIR"), "/var/cache/ioc", str(ROOT / "var" / "cache")]
    for c in candidates:
        if not c:
            continue
        path = Path(c)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise IOCError("no writable cache directory: set IOC_CACHE_DIR")


def vtest_path(fetch: bool = True) -> Path:
    """Path of vtest.avi, fetching it from Debian's opencv-doc package when missing."""
    target = cache_dir() / "vtest.avi"
    if target.exists() and target.stat().st_size > 0:
        return target
    if not fetch:
        raise IOCError(f"{target} is missing: run `python -m analytics.vision.footage`")
    with tempfile.TemporaryDirectory(prefix="ioc-footage-") as tmp:
        try:
            subprocess.run(
                ["apt-get", "download", PACKAGE],
                cwd=tmp,
                check=True,
                capture_output=True,
                timeout=300,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise IOCError(f"cannot download Debian package {PACKAGE}: {exc}") from None
        debs = sorted(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        if not debs:
            raise IOCError(f"apt-get download {PACKAGE} produced no .deb")
        out = Path(tmp) / "x"
        subprocess.run(["dpkg", "-x", str(debs[0]), str(out)], check=True, timeout=300)
        src = out / MEMBER
        if not src.exists():
            gz = src.with_suffix(".avi.gz")
            if not gz.exists():
                raise IOCError(f"{PACKAGE} does not contain {MEMBER}")
            subprocess.run(["gunzip", str(gz)], check=True)
        partial = target.with_suffix(".part")
        shutil.copyfile(src, partial)
        partial.replace(target)
    return target


if __name__ == "__main__":
    print(vtest_path())
