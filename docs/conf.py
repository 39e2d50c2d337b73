"""Sphinx configuration: MyST Markdown pages plus autodoc of the package."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "pyro_vae"
author = "the pyro_vae developers"
copyright = "2026, the pyro_vae developers"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
myst_enable_extensions = ["dollarmath", "amsmath"]
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_mock_imports = []
nitpicky = False
html_theme = "alabaster"
suppress_warnings = ["myst.header"]

# Tutorials are MyST notebooks, executed on every build (a fresh build has an empty cache); a cell
# that fails fails the build. Their kernels inherit the environment (PYRO_VAE_DATA, PYRO_VAE_CACHE,
# OMP_NUM_THREADS); docs/tutorials/tutorial_support.py caps torch at two threads.
nb_execution_mode = "cache"
nb_execution_raise_on_error = True
nb_execution_timeout = 600
nb_execution_show_tb = True
# stderr of the cells is not shown (e.g. tqdm's notice that ipywidgets is absent); errors still
# fail the build.
nb_output_stderr = "remove"
