"""Operation counts and derivation time on the deep chain tanh(w_L*tanh(...tanh(w_1*x))).

Naive differentiation (one sympy.diff per parameter, each evaluated as written) grows
quadratically in the depth L per parameter; symbp's reverse-mode program stays within a
constant factor of the forward loss. Run: python benchmarks/derivation_scaling.py
"""

import sys

from symbp.stats import format_scaling, scaling_table


def main() -> None:
    sys.setrecursionlimit(20_000)
    print(format_scaling(scaling_table((5, 10, 20, 40, 80, 160))))


if __name__ == "__main__":
    main()
