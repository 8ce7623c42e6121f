# Arguments (included by crypto.pyx): every check is made before anything is
# borrowed or allocated, so that bad input is an exception that leaves
# nothing behind.  Public inputs are read in place through _In.


# -- keys, sizes and ints -----------------------------------------------------

cdef int _not_secure(object obj, str name) except -1:
    raise TypeError(f"{name} must be a SecureBuffer, not {type(obj).__name__}")


cdef int _wrong_length(str name, size_t expected, Py_ssize_t got) except -1:
    raise ValueError(f"{name} must be {expected} bytes long, not {got}")


cdef inline SecureBuffer _secure_arg(object obj, str name, size_t expected):
    # A key argument: a SecureBuffer of exactly `expected` bytes (0: any size).
    if not isinstance(obj, SecureBuffer):
        _not_secure(obj, name)
    cdef SecureBuffer buf = <SecureBuffer>obj
    if expected != 0 and buf.nbytes() != expected:
        _wrong_length(name, expected, <Py_ssize_t>buf.nbytes())
    return buf


cdef int _out_of_range(str name, object lo, object hi, object value) except -1:
    raise ValueError(f"{name} must be between {lo} and {hi}, not {value}")


cdef size_t _int_in(object value, str name, size_t lo, size_t hi) except? 0:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        _out_of_range(name, lo, hi, value)
    return <size_t>value


cdef inline int _size_in(size_t value, str name, size_t lo, size_t hi) except -1:
    if not lo <= value <= hi:
        _out_of_range(name, lo, hi, value)
    return 0


cdef inline int _need(const void *ptr, size_t n, str name) except -1:
    # A pointer argument of the cimport API: NULL only for an empty input.
    if ptr == NULL and n != 0:
        raise ValueError(f"{name} is NULL")
    return 0


# -- public inputs ------------------------------------------------------------

# A public input read in place.  `bytes` is read directly; other objects are
# held through the buffer protocol, a SecureBuffer through a counted borrow.
# Start from _NO_INPUT: _release() is then safe whether or not _input() ran.
cdef struct _In:
    const unsigned char *ptr
    Py_ssize_t len
    void *borrowed           # the SecureBuffer borrowed (the caller holds a reference)
    bint has_view
    Py_buffer view

cdef _In _NO_INPUT           # all zero: C zero-initialises statics


cdef int _input(object obj, _In *inp, str name) except -1:
    cdef SecureBuffer buf
    if PyBytes_CheckExact(obj):
        inp.ptr = <const unsigned char *>PyBytes_AS_STRING(obj)
        inp.len = PyBytes_GET_SIZE(obj)
        return 0
    if isinstance(obj, SecureBuffer):
        buf = <SecureBuffer>obj
        inp.ptr = buf.borrow_read()
        inp.len = <Py_ssize_t>buf.nbytes()
        inp.borrowed = <void *>buf
        return 0
    if isinstance(obj, str) or not PyObject_CheckBuffer(obj):
        raise TypeError(f"{name} must be a bytes-like object, not {type(obj).__name__}")
    PyObject_GetBuffer(obj, &inp.view, PyBUF_SIMPLE)
    inp.has_view = True
    inp.ptr = <const unsigned char *>inp.view.buf
    inp.len = inp.view.len
    return 0


cdef inline int _input_fixed(object obj, _In *inp, str name, size_t expected) except -1:
    _input(obj, inp, name)
    if <size_t>inp.len != expected:
        _wrong_length(name, expected, inp.len)    # the caller's finally releases it
    return 0


cdef inline int _input_or_none(object obj, _In *inp, str name) except -1:
    # An optional input (AAD): None is the same as empty.
    if obj is not None:
        _input(obj, inp, name)
    return 0


cdef inline int _release(_In *inp) except -1:
    # Safe to call twice and on an _In that _input() never filled.
    cdef void *borrowed = inp.borrowed
    if inp.has_view:
        inp.has_view = False
        PyBuffer_Release(&inp.view)
    if borrowed != NULL:
        inp.borrowed = NULL
        (<SecureBuffer>borrowed).release_read()
    return 0
