"""Copy the CUTLASS/CuTe headers from the pinned nvidia-cutlass wheel into third_party/cutlass.

Nothing of CUTLASS is committed: this fills the git-ignored folder from the installed wheel
(constraints.txt pins 4.2.0.0), the same way here and offline on the GPU machine.
"""

import os
import shutil
import sys
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "third_party" / "cutlass"
STAMP = DEST / "VERSION"


def main() -> int:
    try:
        import cutlass_library
    except ImportError:
        print("fetch_cutlass: nvidia-cutlass is not installed (pip install -c constraints.txt nvidia-cutlass)", file=sys.stderr)
        return 1
    from importlib.metadata import version as dist_version

    version = dist_version("nvidia-cutlass")
    if STAMP.exists() and STAMP.read_text().strip() == version:
        return 0
    src = Path(cutlass_library.source_path)
    if DEST.exists():
        shutil.rmtree(DEST)
    shutil.copytree(src / "include", DEST / "include")
    shutil.copytree(src / "tools" / "util" / "include", DEST / "tools" / "util" / "include")
    STAMP.write_text(version + "\n")
    print(f"fetch_cutlass: CUTLASS {version} headers in {os.path.relpath(DEST)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
