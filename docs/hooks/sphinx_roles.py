"""MkDocs hook: render numpydoc's Sphinx roles (``:func:`conv2d```) as plain code.

The docstrings follow numpydoc, which cross-references with Sphinx roles;
mkdocstrings renders the backquoted name as code but leaves the role's
``:func:`` prefix in the text.  This drops the prefix from the rendered HTML.
"""

import re

_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|obj|exc):(?=<code>)")


def on_page_content(html, **kwargs):
    return _ROLE.sub("", html)
