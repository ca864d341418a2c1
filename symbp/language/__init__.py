"""The tensor model language: formulas over named tensors, parsed into terms.

``formula`` parses one formula (never evaluated) into a :class:`terms.Term` tree whose
every node knows its per-sample shape; ``library`` declares the functions and losses a
formula may call, each as a composition of the primitive tensor ops; ``model`` reads a
spec's ``[model]`` table into a :class:`model.TensorModel` record.
"""
