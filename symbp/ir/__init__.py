"""The model IR: a DAG of tensor operations (``graph``), built from each kind of model
record (``build`` for scalar models and layer stacks, ``tensor_build`` for the model
language)."""
