"""Sphinx's configuration of the collection's site; ``site/build.py`` copies it into the
source tree it assembles and builds there."""

project = "attn-lib"
author = "attn-lib"
html_title = "attn-lib: attention under modified Query, Key and Value"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]

nb_execution_mode = "off"  # the committed outputs are the pages' outputs, never re-made
myst_heading_anchors = 3  # the README's and docs' links to a section (#what-the-…)
# No math ($…$ is text, myst's dollarmath being off): Sphinx adds MathJax, from its CDN,
# only to a page with math, and tests/test_site.py fails a page that fetches from the network.
exclude_patterns = ["_static"]
smartquotes = False  # text as written: a shape's 'layers heads T T', a caption's stack's

autodoc_typehints = "description"  # jaxtyping's shapes read as text beside each parameter
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # an Attributes section as fields: autodoc documents the members once

html_theme = "sphinx_book_theme"
html_favicon = "favicon.svg"  # a browser asks for one: without it, a 404 in its console
html_static_path = ["_static"]  # the explorer's script and data (site/explorer.py)
html_copy_source = False
# No download button: the notebooks are in the repository, and the site keeps no copy.
html_theme_options = {"home_page_in_toc": True, "use_download_button": False}
# The theme's mode before a reader picks one (left unset, its script logs an error on
# every first visit); light: the figures are drawn on white.
html_context = {"default_mode": "light"}
