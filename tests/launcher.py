"""A Python interpreter that has imported the scripts' heavy dependencies (torch, gymnasium, mujoco, tyro,
TensorBoard's writer: about 2 s of CPU per start, most of a refused run's cost) and then runs each requested
script in a forked child, as `python script args` would: its own process, the script as __main__ with its
directory first on sys.path, its own argv, cwd and environment, stdin from /dev/null (no script reads it),
stdout and stderr to files, and the interpreter's exit: an uncaught SystemExit("error: ...") prints that one
line to stderr and exits 1, another exception prints its traceback and exits 1, then non-daemon threads are
joined, atexit handlers run and stdout and stderr are flushed. What the child skips is the final teardown of
every module and object (Python does not promise to finalise them at exit either): in a fork it writes to each
page of the inherited heap and costs about as much as the imports saved. The repository's own modules are not
preloaded: each child imports them afresh from the script's directory. tests/test_launcher.py holds all this.

conftest.refused() drives it for runs that must refuse their input before any work. Protocol, one request at a
time: a JSON line {script, args, cwd, env, stdout, stderr} on stdin; the reply is the child's pid, then its
exit code (negative: killed by that signal), one line each on stdout. EOF on stdin ends the server."""
import atexit
import json
import os
import runpy
import sys
import threading

import gymnasium  # noqa: F401
import mujoco  # noqa: F401
import numpy  # noqa: F401
import torch  # noqa: F401
import torch.nn  # noqa: F401
import torch.optim  # noqa: F401
import tyro  # noqa: F401
from torch.utils.tensorboard import SummaryWriter  # noqa: F401

while True:
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        break  # the child leaves the loop and becomes the script
    os.write(1, f"{pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    os.write(1, f"{os.waitstatus_to_exitcode(status)}\n".encode())

os.chdir(request["cwd"])
os.environ.clear()
os.environ.update(request["env"])
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, fd)
    os.close(out)
sys.argv = [request["script"], *request["args"]]
sys.path[0] = os.path.dirname(os.path.realpath(request["script"]))  # as CPython computes it
del line, request, pid, null, fd, path, out
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
    code = 0
except SystemExit as e:  # as the interpreter handles it at the top level
    code = 0 if e.code is None else e.code
    if not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
except BaseException:
    sys.excepthook(*sys.exc_info())
    code = 1
threading._shutdown()
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code & 0xFF)
