"""Packaging: everything is in setup.cfg but one thing setuptools cannot be told there.

``twistd`` finds its plugins (``twisted/plugins/imgshare_plugin.py``, which names the
``imgshare`` command) only in folders on ``sys.path``.  A wheel installs that file
into site-packages' ``twisted/plugins``; an editable install's default mode instead
maps packages with an import hook, which puts no folder on ``sys.path``, so
``twistd`` would not know ``imgshare``.  The editable install therefore also gets a
``.pth`` naming the project folder, as setuptools' ``compat`` mode writes anyway.
"""

import os

from setuptools import setup
from setuptools.command.editable_wheel import editable_wheel


class _WithPluginFolder:
    """An editable-install strategy that also writes the plugin folder's ``.pth``."""

    def __init__(self, strategy, project_dir):
        self._strategy = strategy
        self._project_dir = project_dir

    def __call__(self, wheel, files, mapping):
        self._strategy(wheel, files, mapping)
        wheel.writestr("__editable__.imgshare-twisted-plugins.pth", self._project_dir + "\n")

    def __enter__(self):
        self._strategy.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self._strategy.__exit__(*exc_info)


class EditableWheel(editable_wheel):
    def _select_strategy(self, name, tag, build_lib):
        strategy = super()._select_strategy(name, tag, build_lib)
        return _WithPluginFolder(strategy, os.path.abspath(self.project_dir))


setup(cmdclass={"editable_wheel": EditableWheel})
