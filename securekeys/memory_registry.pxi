# Included by _memory.pyx: the registry of live buffers.
#
# Registry of live buffers: an intrusive doubly linked list of borrowed
# references, linked in __cinit__ and unlinked in __dealloc__ (both under the
# GIL).  Cheap (no weakrefs); wipe_all(), the fork hook, KeyRing.destroy() and
# report() walk it, running no Python code while they do (the next node must
# still be alive when they get to it).

cdef void *_registry_head = NULL
cdef Py_ssize_t _registry_count = 0


cdef inline void _register(SecureBuffer buf) noexcept:
    global _registry_head, _registry_count
    buf._c_prev = NULL
    buf._c_next = _registry_head
    if _registry_head != NULL:
        (<SecureBuffer>_registry_head)._c_prev = <void *>buf
    _registry_head = <void *>buf
    _registry_count += 1


cdef inline void _unregister(SecureBuffer buf) noexcept:
    global _registry_head, _registry_count
    if buf._c_prev != NULL:
        (<SecureBuffer>buf._c_prev)._c_next = buf._c_next
    elif _registry_head == <void *>buf:
        _registry_head = buf._c_next
    else:
        return  # never linked
    if buf._c_next != NULL:
        (<SecureBuffer>buf._c_next)._c_prev = buf._c_prev
    buf._c_prev = buf._c_next = NULL
    _registry_count -= 1


def live_buffers():
    """Number of secure buffers currently allocated in this process."""
    return _registry_count
