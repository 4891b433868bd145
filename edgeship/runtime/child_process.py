"""Child processes that run edgeship's own installed code, and nothing from where they start.

``python -m`` puts the working directory first on ``sys.path``, and ``multiprocessing``'s
``spawn`` runs the parent's main script again in every child: a folder holding an ``edgeship/``
package (any cloned repository could) would be imported instead of the installed one, and a
user's script without an ``if __name__ == "__main__":`` guard would start its work again in
each child. So children are started as ``python -P -m edgeship...`` (``-P``: nothing prepended
to ``sys.path``; Python 3.11+) in an empty folder of their own.

Example:
    >>> module_command("edgeship.edgetpu.probe")[-2:]
    ['-m', 'edgeship.edgetpu.probe']
"""

from __future__ import annotations

import sys

__all__ = ["module_command", "python_command"]


def python_command(*arguments: str) -> list[str]:
    """This Python with ``arguments``, adding nothing to ``sys.path``; start it with ``cwd`` set
    to an empty folder (see the module's docstring)."""
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, *arguments]


def module_command(module: str) -> list[str]:
    """The command line that runs ``module`` of the installed edgeship (:func:`python_command`)."""
    return python_command("-m", module)
