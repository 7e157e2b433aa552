"""Installs the Mesos client libraries the Mesos API tests drive, unmodified
(pymesos 0.3.15, mesoshttp 0.4.2), into the running interpreter's
environment; does nothing when they import.

pymesos 0.3.15 depends on http-parser, whose sdist compiles a Cython-made C
parser that does not build on Python 3.11. pymesos falls back to
http-parser's pure-Python parser (http_parser.pyparser) when the C module
is missing, so this installs pymesos without dependencies and puts only the
pure-Python modules of the http-parser 0.9.0 sdist in place.

Usage: python install.py   (exit 0: importable; otherwise the reason)
"""

import glob
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile

PYMESOS = "pymesos==0.3.15"
HTTP_PARSER = "http-parser==0.9.0"
# pymesos's other dependencies, pinned (kazoo is only for zk:// masters).
DEPS = ["six==1.17.0", "addict==2.4.0"]
# mesoshttp installs as it is, with its dependencies pinned here.
MESOSHTTP = ["mesoshttp==0.4.2", "kazoo==2.11.0", "PyJWT==2.15.1", "cryptography==51.0.1"]


def importable(*names):
    try:
        for n in names:
            importlib.import_module(n)
        return True
    except Exception:
        return False


def pip(*args):
    subprocess.check_call([sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args])


def install_http_parser():
    site = sysconfig.get_paths()["purelib"]
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "--no-deps", "--no-binary", ":all:", HTTP_PARSER, "-d", tmp)
        (sdist,) = glob.glob(os.path.join(tmp, "http-parser-*.tar.gz"))
        with tarfile.open(sdist) as t:
            t.extractall(tmp, filter="data")
        (src,) = glob.glob(os.path.join(tmp, "http-parser-*", "http_parser"))
        dst = os.path.join(site, "http_parser")
        os.makedirs(dst, exist_ok=True)
        for f in glob.glob(os.path.join(src, "*.py")):
            shutil.copy(f, dst)


def main():
    if not importable("http_parser.http"):
        install_http_parser()
    if not importable("pymesos"):
        pip("install", *DEPS)
        pip("install", "--no-deps", PYMESOS)
    if not importable("mesoshttp.client"):
        pip("install", *MESOSHTTP)
    if not importable("pymesos", "http_parser.pyparser", "mesoshttp.client"):
        sys.exit("pymesos or mesoshttp is still not importable after installing them")


if __name__ == "__main__":
    main()
