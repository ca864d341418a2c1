"""The derivation documents: scalar models (``expression``), layer stacks (``layers``)
and tensor models (``graph``), over shared notation (``notation``), chain-rule steps
(``chain``) and layout (``layout``); templates in ``templates/``."""
