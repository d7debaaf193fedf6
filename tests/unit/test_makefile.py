"""`make install` on a stock Debian/Ubuntu Python (issue 17): no `pip install` into the system
Python, which PEP 668 refuses there; uv from PATH, else bootstrapped into a virtualenv of its own.
The image test (`make image-test`) runs it for real on a plain Debian base."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _dry_run(tmp_path: Path, path: str) -> str:
    for name in ("Makefile", "pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    done = subprocess.run(
        ["/usr/bin/make", "-n", "install"],
        cwd=tmp_path,
        env={"PATH": path, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_without_uv_on_path_it_is_bootstrapped_into_a_venv_not_the_system_python(
    tmp_path: Path,
) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    out = _dry_run(tmp_path, f"{bare}:/usr/bin:/bin")
    assert shutil.which("uv", path=f"{bare}:/usr/bin:/bin") is None
    assert "python3 -m venv build/uv-venv" in out
    assert "build/uv-venv/bin/pip install" in out
    assert "build/uv-venv/bin/uv sync --frozen" in out
    assert "python3 -m pip" not in out


def test_uv_on_path_is_used_as_it_is(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "uv"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    out = _dry_run(tmp_path, f"{bin_dir}:/usr/bin:/bin")
    assert f"{fake} sync --frozen" in out
    assert "uv-venv" not in out
    assert "pip" not in out
