"""The ``aigi`` command (:func:`aigi.cli.main.main`): one module per verb or verb group.

Importing this package, or any of its modules, does not import torch.
"""
