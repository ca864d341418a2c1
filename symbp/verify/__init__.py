"""Verify your own derivations: claimed formulas checked against symbp's derivation.

``verify_claims(spec, {"dl/dw1": "2*(yhat - y)*x**2"})`` proves, refutes (with a point
where the values differ) or leaves undecided (equal at seeded points) each claim; the
command line is ``symbp verify SPEC CLAIMS.toml``.
"""

from .claims import Claim, ClaimResult, Verification, read_claims, verify_claims

__all__ = ["Claim", "ClaimResult", "Verification", "read_claims", "verify_claims"]
