"""Reverse-mode differentiation over the IR: the loop (``reverse``) and one rule per op
(``rules`` for elementwise, mean, linear, softmax and cross-entropy; ``tensor_rules``
for the model language's ops, with their costs and notation; ``conv_rules`` for the
image ops)."""
