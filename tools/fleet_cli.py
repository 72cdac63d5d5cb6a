"""Commands: to be filled in by its area."""


def register(group):
    pass
