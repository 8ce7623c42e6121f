# Included by _memory.pyx: reading from a file descriptor into guarded memory.
#
# Every read goes through _fdio.read_retrying, the project's one read(2) loop.

cdef size_t _fill_from_fd(SecureBuffer buf, int fd) except? 0:
    # read(2) straight into the buffer until it is full or the file ends;
    # short reads continue where they stopped.  Returns the count read.
    cdef size_t done = 0
    cdef ssize_t got
    while done < buf._size:
        got = read_retrying(fd, buf._c_data + done, buf._size - done,
                            "read into a secure buffer")
        if got == 0:
            break
        done += <size_t>got
    return done


def _at_eof(int fd):
    """True when `fd` is at end of file, proven by one more read(2).

    The probe byte lands in C stack memory and is wiped, never in a Python
    object: if the file was longer than expected, that byte is key material.
    """
    cdef unsigned char probe = 0
    cdef ssize_t got
    try:
        got = read_retrying(fd, &probe, 1, "read")
    finally:
        sodium.sodium_memzero(&probe, 1)
    return got == 0


cdef bytes _c_path(object path):
    # A path for C: as os.open takes it, and refused as os.open refuses it
    # when it holds a NUL byte (C would read only up to it: another file).
    cdef bytes encoded = os.fsencode(path)
    if b"\0" in encoded:
        raise ValueError("embedded null byte")
    return encoded


def _unlink_if_same(int dir_fd, bytes name, unsigned long long dev, unsigned long long ino):
    """Unlink `name` (relative to `dir_fd`; -100: the working directory) if
    it is still the file (dev, ino); True when it was unlinked.  write_key's
    take-back: in C, so that no Python signal handler can run between the
    look and the unlink (a second Ctrl-C there would leave the key file).
    Errors (the name gone, or not ours) are no unlink."""
    cdef const char *c_name = name
    cdef struct_stat st
    cdef int rc = -1
    if b"\0" in name:
        return False
    with nogil:
        if (fstatat(dir_fd, c_name, &st, AT_SYMLINK_NOFOLLOW) == 0
                and <unsigned long long>st.st_dev == dev and <unsigned long long>st.st_ino == ino):
            rc = system.unlinkat(dir_fd, c_name, 0)
    return rc == 0


RESOLVE_NO_XDEV = system.RESOLVE_NO_XDEV
RESOLVE_NO_MAGICLINKS = system.RESOLVE_NO_MAGICLINKS
RESOLVE_NO_SYMLINKS = system.RESOLVE_NO_SYMLINKS
RESOLVE_BENEATH = system.RESOLVE_BENEATH


def _openat2(int dir_fd, path, int flags, unsigned long long resolve):
    """openat2(2): open `path` (str or bytes) relative to `dir_fd` under the
    RESOLVE_* restrictions; the new fd, or OSError naming `path` (ELOOP: a
    forbidden link; ENOSYS: a kernel older than Linux 5.6)."""
    cdef bytes encoded = _c_path(path)
    cdef const char *c_path = encoded
    cdef int fd
    with nogil:
        fd = system.openat2(dir_fd, c_path, flags, resolve)
    if fd < 0:
        err = errno
        raise OSError(err, strerror(err).decode("utf-8", "replace"), path)
    return fd


cdef enum:
    _AT_FDCWD = -100
    _STRICT_READ_FLAGS = O_RDONLY | system.O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | O_NONBLOCK
    # An encrypted key file (securekeys/encrypted.py) starts with "SKEYENC"
    # and holds at least a header, one byte and a tag: read as a plain key,
    # it would be a wrong key without a word.  files.py names it.
    _ENCRYPTED_MIN_BYTES = 72 + 1 + 16

cdef const char *_ENCRYPTED_MAGIC_STEM = b"SKEYENC"


def _read_key_strict(SecureBuffer key not None, path):
    """read_key's default path (strict rules, raw bytes) in one C function.

    Fills a new READWRITE key from the key file at `path` and seals it
    READONLY, with no Python between the system calls: fstatat (only a
    regular file is opened: opening a FIFO, socket or device runs its
    driver's open), openat2 refusing every symbolic link, fstat (the same
    inode), the strict rules, read(2) straight into the key, the end-of-file
    probe, close.  Returns True when the key is filled, False
    when the file is anything but the plain case (a link anywhere, a rule
    not met, an error, a signal): files.py then takes the full path, which
    accepts exactly what this accepts and more, and names every refusal.
    Nothing is left behind on False (fd closed; the key is refilled or
    destroyed by the full path).  KeyDestroyedError when the key was
    destroyed or wiped while being read (a FIFO can hold the read for ever).
    """
    cdef bytes encoded = _c_path(path)
    cdef const char *c_path = encoded
    cdef unsigned char *data
    cdef size_t size = key._size
    cdef size_t done = 0
    cdef ssize_t got = 0
    cdef unsigned char probe = 0
    cdef struct_stat looked
    cdef struct_stat st
    cdef int fd = -1
    cdef bint filled = False
    data = _fill_begin(key, "read_key()")
    with nogil:
        # One system call more than an open, so that this path opens nothing
        # but a regular file; anything else (a link, a failure) is left to
        # files.py, which looks with O_PATH.  Only whoever may write the
        # key's directory can swap something in between the two lookups,
        # and a device node only with CAP_MKNOD or a hard link to one of
        # their own (then fstat below refuses it, after its open).
        if (fstatat(_AT_FDCWD, c_path, &looked, AT_SYMLINK_NOFOLLOW) == 0
                and S_ISREG(looked.st_mode)):
            fd = system.openat2(_AT_FDCWD, c_path, _STRICT_READ_FLAGS,
                                system.RESOLVE_NO_SYMLINKS | system.RESOLVE_NO_MAGICLINKS)
        if fd >= 0:
            # The strict rules of files.check_key_file, as a predicate, on
            # the inode that was looked at.
            if (fstat(fd, &st) == 0 and st.st_dev == looked.st_dev and st.st_ino == looked.st_ino
                    and S_ISREG(st.st_mode) and st.st_uid == geteuid()
                    and (st.st_mode & 0o7077) == 0 and st.st_nlink == 1
                    and st.st_size == <off_t>size):
                while done < size:
                    got = read(fd, data + done, size - done)
                    if got <= 0:
                        break
                    done += <size_t>got
                if done == size:
                    got = read(fd, &probe, 1)
                    sodium.sodium_memzero(&probe, 1)
                    filled = got == 0 and not (size >= _ENCRYPTED_MIN_BYTES
                                               and memcmp(data, _ENCRYPTED_MAGIC_STEM, 7) == 0)
            close(fd)
    _fill_end(key, "read_key()")
    if not filled:
        return False
    _set_base(key, SK_READONLY)
    return True
