"""Prove a `sam build` output targets the instruction set it claims.

Reads the ELF header of every shared object under the build directory (the layer's compiled
wheels: pydantic-core, cryptography, cffi) and fails if any is built for another machine,
or if there are none at all (then the check would prove nothing).

    python tests/sam/check_arch.py .aws-sam/ci-arm64/build arm64
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# ELF e_machine values (System V ABI, "Machine" field at offset 18, little-endian here).
_MACHINES = {0x3E: "x86_64", 0xB7: "arm64"}


def elf_machine(path: Path) -> str:
    with path.open("rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF":
        return "not-elf"
    if header[5] != 1:  # EI_DATA: 1 = little-endian, which both Lambda architectures are
        return "big-endian"
    machine = int.from_bytes(header[18:20], "little")
    return _MACHINES.get(machine, f"machine-{machine:#x}")


def check(build_dir: Path, expected: str) -> list[str]:
    """Problems found (empty when every shared object is for `expected`)."""
    objects = sorted(p for p in build_dir.rglob("*.so*") if p.is_file())
    if not objects:
        return [f"no shared objects under {build_dir}: nothing proves the architecture"]
    found = Counter(elf_machine(p) for p in objects)
    print(f"{build_dir}: {len(objects)} shared objects: {dict(found)}")
    return [
        f"{p.relative_to(build_dir)} is {elf_machine(p)}, expected {expected}"
        for p in objects
        if elf_machine(p) != expected
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[2] not in _MACHINES.values():
        print(__doc__, file=sys.stderr)
        return 2
    problems = check(Path(argv[1]), argv[2])
    for problem in problems:
        print("  " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
