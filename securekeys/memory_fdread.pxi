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
    # An encrypted key file (securekeys/encrypted.py) starts with "SKEYENC":
    # read as a plain key, it would be a wrong key without a word, and a
    # truncated one (shorter than a header, one byte and a tag) too.  So a
    # plain key file of 7 bytes or more never starts with it (for a random
    # key, a 2**-56 chance); a shorter key is not compared with a part of
    # the magic: "SKE" is a fine 3-byte key.  files.py names the refusal.
    _MAGIC_STEM_BYTES = 7

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
                    filled = got == 0 and not (size >= _MAGIC_STEM_BYTES
                                               and memcmp(data, _ENCRYPTED_MAGIC_STEM,
                                                          _MAGIC_STEM_BYTES) == 0)
            close(fd)
    _fill_end(key, "read_key()")
    if not filled:
        return False
    _set_base(key, SK_READONLY)
    return True


def _starts_encrypted(int fd):
    """Whether the file open at `fd` starts with an encrypted key file's
    magic ("SKEYENC", any version): pread(2) at offset 0, so the fd's offset
    is left as it was.  The bytes land on the C stack and are wiped, never in
    a Python object: when the file is not an encrypted one they are the
    first bytes of a key.  False for a file shorter than the magic, or one
    pread cannot read (a FIFO: ESPIPE)."""
    cdef unsigned char head[_MAGIC_STEM_BYTES]
    cdef size_t done = 0
    cdef ssize_t got = 0
    cdef int match = 0
    with nogil:
        while done < _MAGIC_STEM_BYTES:
            got = pread(fd, head + done, _MAGIC_STEM_BYTES - done, <off_t>done)
            if got < 0 and errno == EINTR:
                continue
            if got <= 0:
                break
            done += <size_t>got
        # Constant time: the bytes compared may be a key's.
        match = done == _MAGIC_STEM_BYTES and sodium.sodium_memcmp(
            head, _ENCRYPTED_MAGIC_STEM, _MAGIC_STEM_BYTES) == 0
        sodium.sodium_memzero(head, _MAGIC_STEM_BYTES)
    return match != 0


def _write_from(SecureBuffer buf not None, int fd):
    """write(2) all of `buf` to `fd` straight from guarded memory, the GIL
    released, as a counted user (a C borrow, as the crypto runner takes):
    destroy() of a sealed key lets the write finish with the whole key, and
    a wipe under it (wipe_all(), KeyRing.destroy()) is KeyDestroyedError
    whatever write(2) made of it (EFAULT once access is revoked, or zeros
    copied before that): the caller throws away what it wrote.  A NOACCESS
    buffer is raised for the write and returned to NOACCESS; a destroyed
    one is fatal here.  EINTR runs the signal handlers and writes on."""
    cdef const unsigned char *data = buf.borrow_read()
    cdef size_t size = buf._size
    cdef size_t done = 0
    cdef ssize_t got = 0
    cdef int err = 0
    try:
        while done < size:
            with nogil:
                got = write(fd, data + done, size - done)
                err = errno if got < 0 else 0
            if got < 0 and err == EINTR:
                PyErr_CheckSignals()
                continue
            if got < 0:
                break
            done += <size_t>got
    finally:
        buf.release_read()   # KeyDestroyedError when the bytes were wiped under the write
    if err:
        raise OSError(err, strerror(err).decode("utf-8", "replace"))
