"""The page templates and the common-password list are found from a wheel and an editable
install, as from a checkout."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile

from twisted.trial import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Renders a message page in the shared frame, then prints where
#: imgshare and its templates came from.
RENDER = """
import imgshare
from twisted.web.template import flattenString
from imgshare.web import views
results = []
page = views.Layout("Packaged", views.MessageBody("rendered from the installed templates"))
flattenString(None, page).addBoth(results.append)
html = results[0].decode()
assert "rendered from the installed templates" in html and "</html>" in html, html
from imgshare.domain import passwords
assert len(passwords.common_passwords()) >= 10000 and passwords.is_common("Password1234")
print(imgshare.__file__)
print(views.TEMPLATES)
"""


def _copy_source(target: str) -> str:
    """The project without its build leftovers, test runs and git data (builds write in-tree)."""
    ignore = shutil.ignore_patterns(
        ".git", "_trial_temp*", "__pycache__", "build", "dist", "*.egg-info", "test-artifacts",
        "imgshare-data", "dropin.cache", ".venv",
    )
    shutil.copytree(REPO, target, ignore=ignore)
    return target


def _wheel_tool(testcase: unittest.TestCase, base: str, env: dict[str, str]) -> None:
    """Make ``wheel`` importable for pip without build isolation: setuptools before 70.1
    builds wheels with it, so it goes into a folder of its own on ``PYTHONPATH``."""
    try:
        import wheel  # noqa: F401
    except ImportError:
        tools = os.path.join(base, "tools")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", tools,
                        "wheel"], check=True, capture_output=True, env=env, cwd=base, timeout=120)
        env["PYTHONPATH"] = tools


class TemplatesInstalledTests(unittest.TestCase):
    def run_quietly(self, *argv: str, env: dict[str, str], cwd: str) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
        self.assertEqual(done.returncode, 0, f"{argv}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def test_wheel_and_editable_install_find_the_templates(self):
        """A wheel carries templates/ as imgshare.templates and imgshare/data/'s password list,
        and a plain editable install (what CI makes) finds the checkout's: both render a page
        and load the list."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        source = _copy_source(os.path.join(base, "source"))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        pip = [sys.executable, "-m", "pip"]
        _wheel_tool(self, base, env)

        def venv(name: str) -> str:
            folder = os.path.join(base, name)
            self.run_quietly(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                             folder, env=env, cwd=base)
            return os.path.join(folder, "bin", "python")

        wheel_python, editable_python = venv("wheel-venv"), venv("editable-venv")
        dist = os.path.join(base, "dist")
        self.run_quietly(*pip, "--python", wheel_python, "wheel", "--quiet", "--no-deps",
                         "--no-build-isolation", "--wheel-dir", dist, source, env=env, cwd=base)
        [built] = glob.glob(os.path.join(dist, "imgshare-*.whl"))
        with zipfile.ZipFile(built) as wheel_file:
            self.assertIn("imgshare/data/common-passwords.txt", wheel_file.namelist())
        self.run_quietly(*pip, "--python", wheel_python, "install", "--quiet", "--no-deps", "--no-index",
                         built, env=env, cwd=base)
        self.run_quietly(*pip, "--python", editable_python, "install", "--quiet", "--no-deps",
                         "--no-build-isolation", "-e", source,
                         env=env, cwd=base)

        render_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        installed, templates = self.run_quietly(
            wheel_python, "-c", RENDER, env=render_env, cwd=base).split()
        wheel_venv = os.path.join(base, "wheel-venv") + os.sep
        self.assertTrue(installed.startswith(wheel_venv), installed)
        self.assertEqual(templates, os.path.join(os.path.dirname(installed), "templates"))
        self.assertTrue(os.path.isfile(os.path.join(templates, "layout.xhtml")), templates)

        installed, templates = self.run_quietly(
            editable_python, "-c", RENDER, env=render_env, cwd=base).split()
        self.assertEqual(installed, os.path.join(source, "imgshare", "__init__.py"))
        self.assertEqual(templates, os.path.join(source, "templates"))


#: Lists twistd's commands from a folder that is not the project's, then says where the
#: plugin came from.
PLUGIN = """
import sys
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
import twisted.plugins
makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
assert "imgshare" in makers, sorted(makers)
import twisted.plugins.imgshare_plugin as plugin
print(plugin.__file__)
"""


class TwistdPluginInstalledTests(unittest.TestCase):
    """``twistd imgshare`` after a plain ``pip install -e .`` and after ``pip install .``."""

    def run_quietly(self, *argv: str, env: dict[str, str], cwd: str) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=180)
        self.assertEqual(done.returncode, 0, f"{argv}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def fresh_venv(self, base: str, name: str) -> str:
        """A venv that sees the machine's installed libraries (Twisted, setuptools…) through
        a path file, but none of their path files: the checkout this suite runs from is
        not visible in it."""
        import site
        import sysconfig

        folder = os.path.join(base, name)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True, timeout=120)
        python = os.path.join(folder, "bin", "python")
        purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        libraries = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
        with open(os.path.join(purelib, "machine-libraries.pth"), "w") as f:
            f.write("\n".join(sorted(libraries)) + "\n")
        return python

    def test_plain_editable_and_regular_installs(self):
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        source = _copy_source(os.path.join(base, "source"))
        elsewhere = os.path.join(base, "elsewhere")
        os.makedirs(elsewhere)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        _wheel_tool(self, base, env)
        run_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        pip = [sys.executable, "-m", "pip"]
        for name, install in (("editable", ["-e", source]), ("regular", [source])):
            python = self.fresh_venv(base, name)
            found = subprocess.run([python, "-c", PLUGIN], capture_output=True, text=True, env=run_env,
                                   cwd=elsewhere)
            self.assertNotEqual(found.returncode, 0, f"{name}: the plugin was visible before installing")
            self.run_quietly(*pip, "--python", python, "install", "--quiet", "--no-deps",
                             "--no-build-isolation", *install, env=env, cwd=base)
            plugin = self.run_quietly(python, "-c", PLUGIN, env=run_env, cwd=elsewhere).strip()
            expected = source if name == "editable" else os.path.join(base, name)
            self.assertTrue(plugin.startswith(expected + os.sep), (name, plugin))
            usage = self.run_quietly(python, "-c", "import sys; from twisted.scripts.twistd import run; "
                                     "sys.argv[0] = 'twistd'; run()", "imgshare", "--help",
                                     env=run_env, cwd=elsewhere)
            self.assertIn("--max-size", usage)
