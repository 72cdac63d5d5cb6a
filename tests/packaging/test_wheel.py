"""A non-editable install has every module and data file: build the wheel and look inside."""
import subprocess
import sys
import tomllib
import zipfile

from tests.conftest import ROOT


def test_package_list_covers_every_python_package_folder():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {v.rstrip("/") for v in conf["package-dir"].values()}
    folders = {p.parent.relative_to(ROOT).as_posix() for top in ("protocol", "firmware", "bridge", "tools")
               for p in (ROOT / top).rglob("__init__.py") if "node_modules" not in p.parts}
    assert folders <= mapped, "add these to package-dir and packages: %s" % sorted(folders - mapped)
    assert set(conf["packages"]) == set(conf["package-dir"])


def test_wheel_holds_modules_profiles_and_static_page(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("pingjia-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("pingjia/protocol/messages.py", "pingjia/firmware/app.py", "pingjia/firmware/boards/rp2.py",
                 "pingjia/bridge/hub.py", "pingjia/bridge/upstream/sender.py", "pingjia/bridge/profiles/zhejiang.toml",
                 "pingjia/bridge/static/index.html", "pingjia/tools/cli.py", "pingjia/firmware/virtual/vboard.mjs"):
        assert must in names, must
    # one namespace: nothing generic at the top level of site-packages
    tops = {n.split("/")[0] for n in names if not n.startswith("pingjia-")}
    assert tops == {"pingjia"}
