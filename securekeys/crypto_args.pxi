# Arguments (included by crypto.pyx): every check is made before anything is
# borrowed or allocated, so that bad input is an exception that leaves
# nothing behind.


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


cdef inline SecureBuffer _sink_arg(object obj, SecureBuffer key, size_t needed):
    # The caller's buffer a secret result is written into (`out` of the
    # *_into functions): a SecureBuffer that can be written (a SecureKey never
    # changes once filled), not the key itself, with room for `needed` bytes.
    if not isinstance(obj, SecureBuffer):
        _not_secure(obj, "out")
    if isinstance(obj, SecureKey):
        raise TypeError("out must be a writable SecureBuffer, not a SecureKey "
                        "(a key never changes once filled)")
    cdef SecureBuffer out = <SecureBuffer>obj
    if out is key:
        raise ValueError("out must not be the key")
    if out.nbytes() < needed:
        raise ValueError(f"out is too small: the plaintext is {needed} bytes, "
                         f"out holds {out.nbytes()}")
    return out
