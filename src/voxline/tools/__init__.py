"""Tools the model can call: the decorator, the executor, approvals."""
