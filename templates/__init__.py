"""The browser pages' ``twisted.web.template`` files, installed as ``imgshare.templates``.

``layout.xhtml`` is the shared frame; each page has one body template.  setup.cfg maps
the package ``imgshare.templates`` onto this folder (``package_dir``), so a wheel or an
editable install carries them as package data; ``imgshare.web.views.template_folder``
finds them in a checkout too.  See "Browser pages" in docs/architecture.md.
"""
