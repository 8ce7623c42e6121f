# Linux declarations that Cython's own libc/posix .pxd files lack (prctl,
# getrandom, memfd_secret, gettid, openat2, poll, pthread_atfork, sched_yield,
# MAP_FIXED_NOREPLACE, O_NOFOLLOW), and the one C helper that hands a signal
# on to a saved action.
#
# Plain declarations without `except` clauses, like sodium.pxd: the caller
# checks every return code.  Cimport as a namespace:
#   from securekeys.includes cimport system  ...  system.prctl(...)

cdef extern from "sys/prctl.h" nogil:
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)
    enum: PR_GET_DUMPABLE
    enum: PR_SET_DUMPABLE

cdef extern from *:
    """
    #include <errno.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    /* memfd_secret(2) has no glibc wrapper; ENOSYS where the headers lack it. */
    static int securekeys_memfd_secret(void) {
    #ifdef SYS_memfd_secret
        return (int) syscall(SYS_memfd_secret, 0);
    #else
        errno = ENOSYS;
        return -1;
    #endif
    }
    """
    int memfd_secret "securekeys_memfd_secret" () nogil

cdef extern from *:
    """
    #include <sys/syscall.h>
    #include <unistd.h>
    static long securekeys_gettid(void) { return syscall(SYS_gettid); }
    """
    long gettid "securekeys_gettid" () nogil

cdef extern from *:
    """
    #include <errno.h>
    #include <stdint.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    /* openat2(2) (Linux 5.6) has no glibc wrapper.  struct open_how and the
       RESOLVE_* bits are kernel ABI (linux/openat2.h), spelled out here so
       that the build needs no kernel headers. */
    struct securekeys_open_how { uint64_t flags; uint64_t mode; uint64_t resolve; };
    static int securekeys_openat2(int dir_fd, const char *path, int flags, unsigned long long resolve) {
    #ifdef SYS_openat2
        struct securekeys_open_how how = { (uint64_t) (unsigned int) flags, 0, resolve };
        return (int) syscall(SYS_openat2, dir_fd, path, &how, sizeof(how));
    #else
        errno = ENOSYS;
        return -1;
    #endif
    }
    #define SECUREKEYS_RESOLVE_NO_XDEV 0x01
    #define SECUREKEYS_RESOLVE_NO_MAGICLINKS 0x02
    #define SECUREKEYS_RESOLVE_NO_SYMLINKS 0x04
    #define SECUREKEYS_RESOLVE_BENEATH 0x08
    """
    int openat2 "securekeys_openat2" (int dir_fd, const char *path, int flags, unsigned long long resolve) nogil
    enum:
        RESOLVE_NO_XDEV "SECUREKEYS_RESOLVE_NO_XDEV"
        RESOLVE_NO_MAGICLINKS "SECUREKEYS_RESOLVE_NO_MAGICLINKS"
        RESOLVE_NO_SYMLINKS "SECUREKEYS_RESOLVE_NO_SYMLINKS"
        RESOLVE_BENEATH "SECUREKEYS_RESOLVE_BENEATH"

cdef extern from "unistd.h" nogil:
    int unlinkat(int dirfd, const char *pathname, int flags)


cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    enum: POLLIN
    enum: POLLOUT
    int poll(pollfd *fds, unsigned long nfds, int timeout)

cdef extern from "pthread.h" nogil:
    # Handlers run inside fork() itself, whoever calls it (os.fork, a C
    # extension, ctypes): the one hook no fork can bypass.
    int pthread_atfork(void (*prepare)() noexcept nogil, void (*parent)() noexcept nogil,
                       void (*child)() noexcept nogil)

cdef extern from "sys/mman.h" nogil:
    # Linux 4.17: map at exactly this address, or fail rather than replace.
    enum: MAP_FIXED_NOREPLACE

cdef extern from "fcntl.h" nogil:
    enum: O_NOFOLLOW

cdef extern from "sched.h" nogil:
    int sched_yield()

cdef extern from *:
    """
    #include <signal.h>
    /* Hand a signal to a saved action, as if it had never been replaced:
       its SA_SIGINFO handler or its plain one.  SIG_DFL: the default action,
       at once (a signal raised stays pending until the handler returns).
       SIG_IGN: a sent signal is ignored; a fault (si_code > 0) repeats when
       the handler returns, and the kernel kills for a fault it cannot
       deliver.  (Cython cannot compare or call the function pointers of a
       struct sigaction itself.) */
    static void securekeys_chain_signal(const struct sigaction *previous, int sig,
                                        siginfo_t *info, void *context) {
        if (previous->sa_flags & SA_SIGINFO) {
            previous->sa_sigaction(sig, info, context);
        } else if (previous->sa_handler == SIG_IGN) {
            if (info->si_code > 0)
                signal(sig, SIG_IGN);
        } else if (previous->sa_handler == SIG_DFL) {
            signal(sig, SIG_DFL);
            raise(sig);
        } else {
            previous->sa_handler(sig);
        }
    }
    """
    void chain_signal "securekeys_chain_signal" (const void *previous, int sig, void *info, void *context) nogil

cdef extern from "sys/random.h" nogil:
    # getrandom(2) (glibc 2.25): create_key's fill, which must see EFAULT
    # as an error rather than abort on it as randombytes_buf() does.
    ssize_t getrandom(void *buf, size_t buflen, unsigned int flags)
