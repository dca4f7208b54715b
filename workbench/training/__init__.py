"""Sparse training and fine-tuning: the ``train`` job kind, its methods and its loop.

Methods (one module each): ``dense``, ``sr_ste`` (SR-STE and STE for N:M from scratch), ``gmp``
(gradual magnitude pruning), ``dst`` (SET and RigL), ``finetune`` (fixed-mask recovery after a
one-shot mask, optionally with SquareHead distillation). Every run records how its masks evolve.
"""
