"""symbp: symbolic backpropagation with SymPy, emitted as verified training code.

spec (TOML) -> model IR -> reverse mode + CSE -> target-neutral program -> printers
and Jinja templates per target (NumPy now), plus a derivation document.
"""

__version__ = "0.1.0"
