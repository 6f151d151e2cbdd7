"""segctl: the control plane (recipes, staging, submission, status). Never imports torch at import time."""

__version__ = "0.1.0"
