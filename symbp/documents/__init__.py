"""The derivation documents: scalar models (``expression``), layer stacks (``layers``)
and tensor models (``graph``), over shared notation (``notation``), chain-rule steps
(``chain``) and layout (``layout``); templates in ``templates/``.

:func:`render_document` is the one entry point: the document of any derivation.
"""

from __future__ import annotations


def render_document(derivation, fmt: str) -> str:
    """The derivation of ``derivation.spec`` in ``fmt``: "text", "markdown" or "latex"."""
    from ..language.model import TensorModel
    from ..spec.layers import LayerSpec

    if isinstance(derivation.spec, TensorModel):  # the model language: generalized backprop
        from .graph import render_graph_document

        return render_graph_document(derivation, fmt)
    if isinstance(derivation.spec, LayerSpec):  # a layer stack: the delta recursion
        from .layers import render_layer_document

        return render_layer_document(derivation, fmt)
    from .expression import render_expression_document

    return render_expression_document(derivation, fmt)
