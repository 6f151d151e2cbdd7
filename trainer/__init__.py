"""The data plane of segctl: code that runs inside a job (data, models, training, evaluation).

It may import :mod:`segctl.recipe` (the schema) and nothing else from :mod:`segctl`.
"""
