"""Panel in notebooks without internet: every stylesheet inline, also in views updated later.

``pn.extension(inline=True)`` inlines the stylesheets of panel objects a cell displays, but not of
holoviews plots (holoviews renders them through its own path): their layouts keep links to
``https://cdn.holoviz.org`` (``listpanel.css``, ``loading.css``, the theme), and a page without
internet logs failed requests for each plot. A preprocessing hook swaps every such link for the
file panel ships (panel's own ``patch_inline_stylesheets``) whenever a model tree is prepared
outside a server session. Served pages (``pdcr-lab serve``) are left alone: the server serves
those files locally.

What the hook cannot reach: an update that makes panel recompute a shown model's stylesheets is
sent as links again: toggling ``visible``, an ``Alert``'s ``alert_type``, and any new ``object``
of a pane (panes resend all their properties). The package's notebook views avoid them: status
lines are ``StaticText`` widgets (a widget update sends only its value) that stay visible.
``tests/test_browser_notebooks.py`` fails on any request that leaves localhost.
"""

from __future__ import annotations

import contextvars
import re
from typing import Any

__all__ = ["inline_stylesheets_in_notebooks", "standalone_html"]


#: Set while :func:`standalone_html` renders: inline everything, served session or not.
_FORCED = contextvars.ContextVar("pdcr_lab_inline_stylesheets", default=False)


def _inline_hook(viewable: Any, root: Any, *args: Any) -> None:
    from bokeh.models import UIElement
    from panel.config import config
    from panel.io.notebook import patch_inline_stylesheets
    from panel.io.state import state

    served = state.curdoc is not None and state.curdoc.session_context is not None
    if not _FORCED.get() and (not config.inline or served):
        return
    for model in root.select({"type": UIElement}):
        patch_inline_stylesheets(model)


def inline_stylesheets_in_notebooks() -> None:
    """Install the hook (once per process)."""
    from panel.viewable import Viewable

    if _inline_hook not in Viewable._preprocessing_hooks:
        Viewable._preprocessing_hooks.append(_inline_hook)


def standalone_html(obj: Any, title: str) -> str:
    """`obj` (anything panel can show) as one self-contained HTML page: JavaScript and every stylesheet
    inline, so the file opens without internet (panel's own ``save`` keeps links to its CDN
    stylesheets).

    Parameters
    ----------
    obj : Any
        A panel object, a holoviews element, ...
    title : str
        The page's title.
    """
    import io

    import panel as pn
    from bokeh.resources import INLINE

    inline_stylesheets_in_notebooks()
    text = io.StringIO()
    token = _FORCED.set(True)
    try:
        pn.panel(obj).save(text, resources=INLINE, title=title)
    finally:
        _FORCED.reset(token)
    # panel's page template links its favicon on the CDN: a browser would fetch it.
    return re.sub(r'<link rel="(?:apple-touch-)?icon"[^>]*href="https?://[^"]*"[^>]*>', "", text.getvalue())
