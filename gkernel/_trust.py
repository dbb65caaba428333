"""What gkernel may believe about files and processes it did not just make itself.

A host file names a process and holds the keys to command it; a lock file
decides who starts a host. In a runtime directory other users can write to, a
planted file would capture our kernels (or hand ours to them), and after a
host dies its pid can be a zombie or another program's. So:

* a host file is used only if it is a regular file owned by the current
  user, with no permission for anyone else, in a directory that only its
  owner (the current user) can write to (:func:`private_file`); a lock file
  (whose content nobody reads) if it is a regular file of ours in such a
  directory, made private if it was not (:func:`claim_file`: older gkernels
  made it under the umask);
* a process is the one a file names only if the kernel says it started at the
  same instant (:func:`start_ticks`, from ``/proc``: a reused pid has another
  start time) and it is not a zombie.
"""

import os
import stat

__all__ = ["PrivacyError", "claim_file", "private_directory", "private_file", "process_matches", "start_ticks"]


class PrivacyError(Exception):
    """A file or directory others could have written: not to be trusted."""


def private_directory(path):
    """Raise PrivacyError unless *path* is a directory of ours that nobody else can write to."""
    st = os.stat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PrivacyError(f"{path} is not a directory only you can write to "
                           f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")


def private_file(path):
    """Raise PrivacyError unless *path* is a regular file of ours, for our eyes only, in a private directory."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PrivacyError(f"{path} is not a private file of yours "
                           f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
    private_directory(os.path.dirname(os.path.abspath(path)))


def claim_file(fd, path):
    """Raise PrivacyError unless the open file *fd* (at *path*) is a regular file of ours in a
    private directory; then take away any permission others have on it."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        raise PrivacyError(f"{path} is not a file of yours (owner uid {st.st_uid})")
    private_directory(os.path.dirname(os.path.abspath(path)))
    if st.st_mode & 0o077:
        os.fchmod(fd, 0o600)


def start_ticks(pid="self"):
    """When process *pid* started (clock ticks after boot), or None if there is no such live process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):  # a zombie, or dead: only its exit status is left
        return None
    return int(fields[19])


def process_matches(pid, started):
    """Whether *pid* is a live process that started at *started* (None: any live process)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    ticks = start_ticks(pid)
    return ticks is not None and (started is None or ticks == started)
