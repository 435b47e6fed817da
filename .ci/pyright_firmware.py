"""Type-check firmware/ against the ESP32 MicroPython stubs, not CPython's typeshed.

The stubs package ships MicroPython's stdlib as `stdlib/` in site-packages, so that folder is the
typeshed for this run. Run: python .ci/pyright_firmware.py
"""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

root = Path(__file__).resolve().parent.parent
site = Path(sysconfig.get_paths()["purelib"])
if not (site / "stdlib").is_dir() or not (site / "machine.pyi").exists():
    sys.exit("micropython-esp32-stubs is not installed in this environment (pip install -e '.[dev]')")
config = {
    "include": ["firmware"],
    "exclude": ["firmware/sim"],
    "typeshedPath": str(site),
    "extraPaths": [str(root / "firmware"), str(site)],
    "pythonPlatform": "Linux",
    "typeCheckingMode": "basic",
    "reportMissingModuleSource": "none",
}
# pyright reads include/exclude relative to the config file, so it lives (briefly) at the root.
path = root / ".pyright-firmware.json"
path.write_text(json.dumps(config))
try:
    pyright = Path(sys.executable).parent / "pyright"
    sys.exit(subprocess.call([str(pyright), "-p", str(path)]))
finally:
    path.unlink()
