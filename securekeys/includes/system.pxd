# Linux declarations that Cython's own libc/posix .pxd files lack.
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
