"""The child side of harness/services/sandbox.py, run as a script: `python -I -S -B harness/services/sandbox_child.py`.

It reads its orders (marshal, from the trusted harness) on stdin, builds its minimal root (mode
isolated), sets its limits, drops to its own uid, runs the program, then evaluates each hole of
each check (the sub-expressions of an assert that involve the program) and writes their values,
as plain data, one line per step on the result fd. It never sees an expected value and never
compares anything: the harness does that (harness/services/sandbox_check.py). Everything here runs in the
program's process, so nothing here is trusted: a program can rewrite any of it, and then it only
forges its own results, which it could also have returned; what keeps that from being a pass is
that the harness alone knows the expected values.

Only built-in modules (no json, dataclasses, enum: each costs a child 5-50 ms).
"""
import marshal
import os
import resource
import sys

import _collections  # built in: the genuine defaultdict and OrderedDict, before the program runs
import _signal  # `signal` without its enum wrappers


class StepTimeout(BaseException):
    """A step ran past Limits.seconds (BaseException: a bare `except Exception` cannot swallow it)."""


class NotPlain(Exception):
    """A value that is not plain data: anything but the exact builtin types below."""


RESULT_UNWRITABLE = 3  # the exit status when a record cannot be written
MAX_DEPTH = 100  # plain values nest shallowly; a cyclic list stops here instead of recursing forever
_NAME = type.__dict__["__name__"].__get__  # a class's own name, without running a metaclass's code
_MODULE = type.__dict__["__module__"].__get__
_BASES = type.__dict__["__bases__"].__get__
_FLAGS = type.__dict__["__flags__"].__get__
_MRO = type.__dict__["__mro__"].__get__
HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python, so possibly by the program
# The standard library's dicts that MBPP's own solutions return (tasks 40, 88, 653, 902): they
# compare with a dict literal as the plain dict of their items, so that is what is sent, read with
# dict's own method. Counter is pure Python, so it is known by name and base, not identity; a
# program's class that imitates it still only shows its dict storage.
_DICTS = (_collections.defaultdict, _collections.OrderedDict)


def _dict_like(t):
    if t is _DICTS[0] or t is _DICTS[1]:
        return True
    try:
        name, module, bases = _NAME(t), _MODULE(t), _BASES(t)  # compared only once known to be builtin
    except AttributeError:  # a class without __module__
        return False
    return (type(name) is str and name == "Counter" and type(module) is str and module == "collections"
            and type(bases) is tuple and len(bases) == 1 and bases[0] is dict)


def _hex(text, limit=None):
    """str -> hex of its UTF-8 (lone surrogates kept): a JSON string that needs no escaping; cut
    to `limit` bytes (messages only; the harness decodes those leniently)."""
    return str.encode(text, "utf-8", "surrogatepass")[:limit].hex()


def _plain(x, out, depth, budget, type=type, int=int, float=float, complex=complex, str=str, bytes=bytes,
           bool=bool, list=list, tuple=tuple, dict=dict, set=set, frozenset=frozenset, len=len):
    """Append the tagged encoding of `x` to `out`, checking `type(x) is ...` before touching it, so
    no method of the program's objects runs (no __eq__, __repr__, __iter__, __hash__). The
    builtins are bound here, before the program could patch them."""
    t = type(x)
    if depth > MAX_DEPTH:
        raise NotPlain(f"nested deeper than {MAX_DEPTH}")
    if x is None:
        piece = '["n"]'
    elif t is bool:
        piece = '["b",1]' if x else '["b",0]'
    elif t is int:
        piece = '["i","' + int.__format__(x, "x") + '"]'  # hex: no int_max_str_digits limit
    elif t is float:
        piece = '["f","' + float.hex(x) + '"]'  # exact, inf and nan included
    elif t is str:
        piece = '["s","' + _hex(x) + '"]'
    elif t is bytes:
        piece = '["y","' + bytes.hex(x) + '"]'
    elif t is complex:
        piece = '["c","' + float.hex(x.real) + '","' + float.hex(x.imag) + '"]'
    elif t is list or t is tuple or t is set or t is frozenset or t is dict or _dict_like(t):
        mapping = not (t is list or t is tuple or t is set or t is frozenset)
        out.append('["' + ("l" if t is list else "t" if t is tuple else "S" if t is set else "F" if t is frozenset
                           else "d") + '"')
        budget[0] -= 5 + (dict.__len__(x) if mapping else len(x))  # the tag, the commas, the bracket
        for item in (dict.items(x) if mapping else x):
            if mapping:
                out.append(",")
                _plain(item[0], out, depth + 1, budget)
                item = item[1]
            out.append(",")
            _plain(item, out, depth + 1, budget)
        piece = "]"
    else:
        raise NotPlain(_NAME(t))
    out.append(piece)
    budget[0] -= len(piece)
    if budget[0] < 0:
        raise NotPlain("larger than the output limit")


def _raised(exc):
    """An exception as ["e", type name, message]; built-in text only, so nothing of the program runs."""
    try:
        t, args = type(exc), BaseException.args.__get__(exc)
        message = args[0] if type(args) is tuple and len(args) and type(args[0]) is str else ""
        if (t is SyntaxError or t is IndentationError or t is TabError) and type(exc.lineno) is int:
            message = f"{message} (line {exc.lineno})"
        elif not _FLAGS(t) & HEAPTYPE and any(c is OSError for c in _MRO(t)):  # its fields are C fields
            number, strerror, filename = exc.errno, exc.strerror, exc.filename
            message = (f"[Errno {number}] " if type(number) is int else "") + (strerror if type(strerror) is str
                                                                                else "") + \
                (f": {filename}" if type(filename) is str else "")
        return f'["e","{_hex(_NAME(t))}","{_hex(message, 200)}"]'
    except BaseException:
        return '["e","3f",""]'  # "?"


def _write(fd, line):
    data = (line + "\n").encode()
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # past the output limit, or the program closed the fd: the record is missing
        os._exit(RESULT_UNWRITABLE)


def _steps(payload, fd, seconds, budget_bytes):
    """Step 0: setup + code, as the authors exec(code, {}) (`__name__ == "__main__"` blocks do not
    run); step i: the holes of check i, in the order the assert evaluates them. An exception in a
    hole is that hole's result (the harness decides whether the assert needed it); a timeout ends
    the run, as the authors' alarm ends theirs."""
    namespace = {}
    fired = [False]

    def on_alarm(signum, frame):
        fired[0] = True
        raise StepTimeout("step ran past its time limit")

    for step, holes in enumerate([None, *payload["checks"]]):
        results = []
        try:
            _signal.signal(_signal.SIGALRM, on_alarm)  # again each step: the program may have replaced it
            _signal.setitimer(_signal.ITIMER_REAL, seconds)
            if holes is None:
                exec(compile(payload["code"], "<program>", "exec"), namespace)  # in this child only
            for hole in holes or ():
                out, budget = [], [budget_bytes]
                try:
                    _plain(eval(compile(hole, "<check>", "eval"), namespace), out, 0, budget)
                    results.append('["v",' + "".join(out) + "]")
                except NotPlain as exc:
                    results.append(f'["x","{_hex(exc.args[0], 200)}"]')  # our own exception: plain text
                except BaseException as exc:
                    if fired[0]:
                        raise
                    results.append(_raised(exc))
            sys.stdout.flush()  # output past the limit fails this step (EFBIG: Python ignores SIGXFSZ)
            sys.stderr.flush()
            _signal.setitimer(_signal.ITIMER_REAL, 0)
        except BaseException as exc:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            _write(fd, f'["timeout",{step}]' if fired[0] else f'["raised",{step},{_raised(exc)}]')
            return
        if fired[0]:  # the program caught the alarm and carried on: still past its time
            _write(fd, f'["timeout",{step}]')
            return
        _write(fd, '["ok"]' if holes is None else '["c",[' + ",".join(results) + "]]")
    _write(fd, '["done"]')


def _set_limits(config):
    lim, cpu = config["limits"], int(config["cpu"]) + 1
    for which, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, lim["memory_mb"] << 20),
                         (resource.RLIMIT_FSIZE, lim["output_kb"] << 10), (resource.RLIMIT_NOFILE, lim["open_files"]),
                         (resource.RLIMIT_NPROC, lim["processes"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value + 1 if which == resource.RLIMIT_CPU else value))


def _new_root(config):
    """As root in the new mount namespace: a read-only tmpfs root holding only the Python runtime
    (bound read-only, its site-packages hidden), the system libraries it loads, four devices and
    a private /tmp with the empty working folder; then pivot_root into it and detach the old root,
    so no path leads back to the machine's files (a chroot would leave the old root reachable)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    rdonly, nosuid, nodev, remount, bind, rec, detach = 1, 2, 4, 32, 4096, 16384, 2
    keep = 8 | 1024 | 2048 | 4096  # noexec, noatime, nodiratime, relatime (ST_* and MS_* agree)

    def check(ok, what):
        if not ok:
            raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")

    def mount(source, target, fstype, flags, data=None):
        check(libc.mount(source.encode(), target.encode(), fstype and fstype.encode(), flags,
                         data and data.encode()) == 0, f"mount {target}")

    root, spec = "/tmp", config["root"]  # the namespace's own /tmp: the machine's stays out of sight
    mount("tmpfs", root, "tmpfs", nosuid | nodev, "size=1m,mode=755")
    for path, target in spec["links"]:
        os.makedirs(os.path.dirname(root + path), exist_ok=True)
        os.symlink(target, root + path)
    for path in spec["binds"]:
        os.makedirs(root + path, exist_ok=True)
        mount(path, root + path, None, bind | rec)
        kept = os.statvfs(path).f_flag & keep  # locked in a user namespace: the remount must repeat them
        mount("none", root + path, None, remount | bind | rdonly | nosuid | nodev | kept)
    for path in spec["hide"]:
        mount("tmpfs", root + path, "tmpfs", rdonly | nosuid | nodev, "size=4k,mode=755")
    os.makedirs(root + "/dev")
    for path in spec["devices"]:
        open(root + path, "w").close()
        mount(path, root + path, None, bind)
    os.mkdir(root + "/tmp")
    mount("tmpfs", root + "/tmp", "tmpfs", nosuid | nodev, f"size={config['limits']['disk_mb']}m,mode=1777")
    os.mkdir(root + config["workdir"], 0o700)
    if config["uid"] is not None:
        os.chown(root + config["workdir"], config["uid"], config["uid"])
    mount("none", root, None, remount | rdonly | nosuid | nodev)
    os.chdir(root)
    check(libc.syscall(spec["pivot_root"], b".", b".") == 0, "pivot_root")  # the old root now sits on top
    check(libc.umount2(b".", detach) == 0, "detach the old root")
    os.chdir("/")
    if config["userns"]:  # root of its user namespace: give up every capability, for good
        check(libc.prctl(38, 1, 0, 0, 0) == 0, "no_new_privs")  # PR_SET_NO_NEW_PRIVS
        header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()  # version 3, this process
        check(libc.capset(header, data) == 0, "drop capabilities")


def main():
    payload = marshal.loads(sys.stdin.buffer.read())
    config = payload["config"]
    if config["root"] is not None:
        _new_root(config)
    _set_limits(config)
    if config["uid"] is not None:
        os.setgroups([])
        os.setgid(config["uid"])
        os.setuid(config["uid"])
    os.chdir(config["workdir"])
    _steps(payload, config["result_fd"], config["limits"]["seconds"], config["limits"]["output_kb"] << 10)
    os._exit(0)


if __name__ == "__main__":
    main()
