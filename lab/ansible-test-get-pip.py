"""Local stand-in for ansible-test's get-pip.py download (that host is not reachable here).

Bootstraps the pip bundled with CPython (ensurepip), then installs the
requested packages (e.g. pip==24.2) from the configured package index.
"""
import ensurepip
import os
import subprocess
import sys

args = sys.argv[1:]
no_setuptools = "--no-setuptools" in args
no_wheel = "--no-wheel" in args
args = [a for a in args if a not in ("--no-setuptools", "--no-wheel")]
# ensurepip.bootstrap() sets PIP_CONFIG_FILE=/dev/null in os.environ: keep the
# caller's environment (and so the machine's pip.conf) for the real install.
env = dict(os.environ)
ensurepip.bootstrap(upgrade=True)
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args, env=env)
remove = [p for p, skip in (("setuptools", no_setuptools), ("wheel", no_wheel)) if skip]
if remove:
    subprocess.call([sys.executable, "-m", "pip", "uninstall", "-y", "--disable-pip-version-check"] + remove, env=env)
