"""The prebuilt-kernel archive check of cmake/kernels.cmake (SQUASH_PREBUILT_KERNELS), run through
CMake itself in its configure-only mode (`SQUASH_KERNELS_ONLY=ON` + an archive): an archive whose
stamp and objects match this tree is taken, one that differs in any stamp line or lacks an
object is refused with the reason. Nothing is compiled: the archives here hold empty members
named like the real objects. Needs nvcc, ninja and CMake >= 3.26 (skipped without them)."""

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "csrc" / "kernels"


def _cmake():
    exe = shutil.which("cmake")
    if not exe or not (shutil.which("nvcc") or Path("/usr/local/cuda/bin/nvcc").exists()) or not shutil.which("ninja"):
        return None
    v = re.search(r"(\d+)\.(\d+)", subprocess.run([exe, "--version"], capture_output=True, text=True).stdout)
    return exe if v and (int(v[1]), int(v[2])) >= (3, 26) else None


CMAKE = _cmake()
pytestmark = pytest.mark.skipif(CMAKE is None, reason="needs nvcc, ninja and CMake >= 3.26")


def configure(build: Path, archive: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [CMAKE, "-S", str(REPO), "-B", str(build), "-G", "Ninja", "-DSQUASH_KERNELS_ONLY=ON",
           "-DCMAKE_BUILD_TYPE=Release", "-DSQUASH_CUDA_ARCHS=90a",
           f"-DSQUASH_PREBUILT_KERNELS={archive or ''}", "-DCMAKE_CUDA_COMPILER=" + (shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc")]
    return subprocess.run(cmd, capture_output=True, text=True)


def make_archive(path: Path, stamp: str, members: list[str]) -> Path:
    work = path.parent / (path.name + ".d")
    work.mkdir()
    for m in members:
        (work / m).write_text("")
    subprocess.run(["ar", "rc", "libsquash_kernels.a", *members], cwd=work, check=True)
    (work / "squash_kernels.stamp").write_text(stamp)
    with tarfile.open(path, "w:xz") as tar:
        for name in ("libsquash_kernels.a", "squash_kernels.stamp"):
            tar.add(work / name, arcname=name)
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A configured kernels-only build folder and this tree's stamp (written at configure time)."""
    build = tmp_path_factory.mktemp("prebuilt") / "build"
    r = configure(build)
    assert r.returncode == 0, r.stdout + r.stderr
    stamp = (build / "squash_kernels.stamp").read_text()
    members = [p.name + ".o" for p in sorted(KERNELS.rglob("*.cu"))]
    return build, stamp, members


def test_stamp_names_what_decides_the_machine_code(tree):
    _, stamp, members = tree
    keys = [line.split(" ", 1)[0] for line in stamp.splitlines()]
    assert keys == ["sources", "files", "flags", "archs", "nvcc", "cutlass"]
    assert f"files {len(members)}" in stamp and "archs 90a" in stamp and "--use_fast_math" in stamp


def test_matching_archive_is_taken(tree, tmp_path):
    build, stamp, members = tree
    r = configure(build, make_archive(tmp_path / "ok.tar.xz", stamp, members))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"stamp matches, {len(members)} objects, archs 90a" in r.stdout


@pytest.mark.parametrize("key,value", [("archs", "80+90a"), ("nvcc", "12.8"), ("cutlass", "4.1.0.0"),
                                       ("sources", "0" * 64), ("flags", "-O2")])
def test_archive_with_another_stamp_is_refused(tree, tmp_path, key, value):
    build, stamp, members = tree
    other = re.sub(rf"^{key} .*$", f"{key} {value}", stamp, flags=re.M)
    r = configure(build, make_archive(tmp_path / "other.tar.xz", other, members))
    assert r.returncode != 0
    assert f"archive:   {key} {value}" in r.stderr and "does not match this tree" in r.stderr


def test_archive_missing_an_object_is_refused(tree, tmp_path):
    build, stamp, members = tree
    r = configure(build, make_archive(tmp_path / "short.tar.xz", stamp, members[1:]))
    assert r.returncode != 0 and f"lacks {members[0]}" in r.stderr


def test_kernel_source_edit_changes_the_stamp(tree, tmp_path):
    # The stamp hashes every kernel source and header: a copy of the tree with one .cuh edited
    # gets another "sources" line (and keeps the other lines).
    _, stamp, _ = tree
    copy = tmp_path / "tree"
    for part in ("CMakeLists.txt", "cmake", "csrc/kernels", "third_party/cutlass/VERSION"):
        src, dst = REPO / part, copy / part
        if not src.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    header = next((copy / "csrc/kernels").rglob("*.cuh"))
    header.write_text(header.read_text() + "\n")
    build = tmp_path / "build"
    r = subprocess.run([CMAKE, "-S", str(copy), "-B", str(build), "-G", "Ninja", "-DSQUASH_KERNELS_ONLY=ON",
                        "-DCMAKE_BUILD_TYPE=Release", "-DSQUASH_CUDA_ARCHS=90a"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    edited = (build / "squash_kernels.stamp").read_text()
    assert edited.splitlines()[0] != stamp.splitlines()[0] and edited.splitlines()[1:] == stamp.splitlines()[1:]
