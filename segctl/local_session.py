"""Start a local job's submitit controller in a session of its own.

A local job's controller is started by ``segctl submit`` and would otherwise share the
terminal's foreground process group with it: Ctrl-C at ``segctl submit --wait`` (SIGINT to
that whole group) would then interrupt the training as well as the waiting command, and
closing the terminal (SIGHUP) would end it. segctl promises that nothing is cancelled
implicitly, so the controller, and the tasks it starts, live in a new session with no
controlling terminal; only ``segctl cancel`` stops them.

submitit's local executor starts its controller as ``python -m submitit.local._local FOLDER``
and offers no option for the new session, but it runs its public ``setup`` commands in the
same shell first. :func:`setup_command` is such a command: the shell ``exec``\\ s this module,
which calls ``setsid()`` and ``exec``\\ s submitit's own controller entry point. Each step keeps
the process id, which submitit records as the job id.

Usage (from that shell only): ``python -m segctl.local_session FOLDER``.
"""

from __future__ import annotations

import os
import shlex
import sys

#: What the command line of a local job's controller holds while this module starts it.
MODULE = "segctl.local_session"

#: submitit's local controller entry point, ``python -m`` this.
SUBMITIT_CONTROLLER = "submitit.local._local"


def setup_command(folder: str, python: str = sys.executable) -> str:
    """The shell command, for submitit's local ``setup`` parameter, that replaces the setup
    shell by the job's controller in a session of its own (``folder``: the executor's folder,
    as submitit passes it to its controller)."""
    return f"exec {shlex.quote(python)} -m {MODULE} {shlex.quote(folder)}"


def main(argv: list[str]) -> None:
    """Become a session leader and run submitit's controller for ``argv[1]`` in place.

    submitit's controller takes its job id from its parent when it was started through a
    setup shell (``SUBMITIT_LOCAL_WITH_SHELL``); here the shell has been replaced, so the id
    is this process's own, which the variable is cleared to say.

    Raises:
        SystemExit: usage error (exit status 2).
        PermissionError: this process already leads a process group (it never does when
            started by submitit's setup shell).
    """
    if len(argv) != 2:
        print(f"usage: python -m {MODULE} FOLDER", file=sys.stderr)
        raise SystemExit(2)
    os.setsid()
    os.environ["SUBMITIT_LOCAL_WITH_SHELL"] = ""
    os.execv(sys.executable, [sys.executable, "-m", SUBMITIT_CONTROLLER, argv[1]])


if __name__ == "__main__":
    main(sys.argv)
