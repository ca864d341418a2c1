"""The front end: specs read from TOML into validated model records, never evaluated.

``expression`` reads a spec (and dispatches to the layer-stack or the model-language
front end), ``layers`` layer stacks, ``fields`` the tables every kind shares (numbers,
``[train]``, names), ``formula`` the whitelist parser of scalar formulas. The model
language's own parser is :mod:`symbp.language`.
"""
