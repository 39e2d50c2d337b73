"""Sphinx configuration: MyST Markdown pages plus autodoc of the package."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "pyro_vae"
author = "the pyro_vae developers"
copyright = "2026, the pyro_vae developers"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
myst_enable_extensions = ["dollarmath", "amsmath"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_mock_imports = []
nitpicky = False
html_theme = "alabaster"
suppress_warnings = ["myst.header"]
