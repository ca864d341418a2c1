"""The target-neutral program: its statements and passes (``statements``), readable
names (``naming``), the buffer plan of in-place steps (``memory``), and what it costs
in flops (``flops``)."""
