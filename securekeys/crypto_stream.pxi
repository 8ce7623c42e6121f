# Streams (included by crypto.pyx): crypto_secretstream_xchacha20poly1305,
# a sequence of messages (chunks of a file, records on a connection) under
# one key, each authenticated, in order, with an explicit final message.
#
# The libsodium state holds a key derived from ours and the nonce counter:
# it lives in a guarded SecureBuffer, NOACCESS between calls, borrowed for
# writing by the runner for each call, and destroyed (wiped) by close() or
# when the object is collected.

STREAM_KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
STREAM_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
STREAM_OVERHEAD_BYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES


ctypedef sodium.crypto_secretstream_xchacha20poly1305_state *_StreamState


cdef int _init_push_call(_Args *a) noexcept nogil:
    return sodium.crypto_secretstream_xchacha20poly1305_init_push(<_StreamState>a.state, a.out, a.key)


cdef int _init_pull_call(_Args *a) noexcept nogil:
    return sodium.crypto_secretstream_xchacha20poly1305_init_pull(<_StreamState>a.state, a.nonce, a.key)


cdef int _push_call(_Args *a) noexcept nogil:
    return sodium.crypto_secretstream_xchacha20poly1305_push(
        <_StreamState>a.state, a.out, &a.written, a.m, a.mlen, a.ad, a.adlen, a.flag)


cdef int _pull_call(_Args *a) noexcept nogil:
    # Verifies the tag before writing anything to a.out (NULL when empty).
    return sodium.crypto_secretstream_xchacha20poly1305_pull(
        <_StreamState>a.state, a.out, &a.written, &a.flag, a.m, a.mlen, a.ad, a.adlen)


cdef int _rekey_call(_Args *a) noexcept nogil:
    sodium.crypto_secretstream_xchacha20poly1305_rekey(<_StreamState>a.state)
    return 0


cdef _Op _INIT_PUSH = _Op(call=_init_push_call, name=b"crypto_secretstream_xchacha20poly1305_init_push",
                          failure=SODIUM_INTERNAL, heavy=False, stack=_STACK_SMALL)
cdef _Op _INIT_PULL = _Op(call=_init_pull_call, name=b"crypto_secretstream_xchacha20poly1305_init_pull",
                          failure=SODIUM_INTERNAL, heavy=False, stack=_STACK_SMALL)
cdef _Op _PUSH = _Op(call=_push_call, name=b"crypto_secretstream_xchacha20poly1305_push",
                     failure=SODIUM_INTERNAL, heavy=False, stack=_STACK_SMALL)
cdef _Op _PULL = _Op(call=_pull_call, name=b"crypto_secretstream_xchacha20poly1305_pull",
                     failure=SODIUM_FORGED, heavy=False, stack=_STACK_SMALL)
cdef _Op _REKEY = _Op(call=_rekey_call, name=b"crypto_secretstream_xchacha20poly1305_rekey",
                      failure=SODIUM_INTERNAL, heavy=False, stack=_STACK_SMALL)


cdef class _Stream:
    """What both ends share: the guarded state, one caller at a time, the end."""
    cdef SecureBuffer _state      # None once closed
    cdef bint _busy               # a call is running (perhaps without the GIL)
    cdef bint _finished           # the final message went through

    cdef int _start(self, SecureBuffer key, const _Op *op, _Args *a) except -1:
        self._state = SecureBuffer(sodium.crypto_secretstream_xchacha20poly1305_statebytes())
        _run(op, a, key, None, self._state)
        self._state.noaccess()
        return 0

    cdef SecureBuffer _enter(self):
        # One call at a time: two pushes sharing the counter would encrypt two
        # messages under one nonce.  Checked and set with the GIL held.
        if self._state is None:
            raise ValueError("the stream is closed")
        if self._finished:
            raise ValueError("the stream is finished: its final message went through")
        if self._busy:
            raise RuntimeError("a stream is used by one thread at a time")
        self._busy = True
        return self._state

    def rekey(self):
        """Replace the state's key by one derived from it (forward secrecy
        within a stream); both ends must rekey after the same message."""
        cdef _Args a = _NO_ARGS
        state = self._enter()
        try:
            _run(&_REKEY, &a, None, None, state)
        finally:
            self._busy = False

    @property
    def finished(self):
        """True once the final message was pushed or pulled."""
        return self._finished

    @property
    def closed(self):
        return self._state is None

    def close(self):
        """Wipe the state.  ValueError (after wiping) when the final message
        never went through: the stream was cut short."""
        if self._busy:
            raise RuntimeError("a stream is used by one thread at a time")
        state = self._state
        if state is None:
            return
        self._state = None
        state.destroy()
        if not self._finished:
            raise ValueError("the stream was closed before its final message")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except ValueError:
            pass            # the error already on its way says more


cdef class StreamEncryptor(_Stream):
    """Encrypt a stream of messages under a 32-byte key.

    Send `header` (24 bytes) first, then each push()'s bytes in order; mark
    the last message final=True.  A context manager: leaving it closes the
    stream (ValueError if no final message was pushed).
    """
    cdef readonly bytes header

    def __init__(self, key):
        cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES)
        cdef _Args a = _NO_ARGS
        header = PyBytes_FromStringAndSize(NULL, sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES)
        a.out = <unsigned char *>PyBytes_AS_STRING(header)
        self._start(k, &_INIT_PUSH, &a)
        self.header = header

    def push(self, message, *, aad=b"", bint final=False):
        """Encrypt the next message: bytes of ``len(message) + 17``."""
        cdef _In m = _NO_INPUT
        cdef _In ad = _NO_INPUT
        cdef _Args a = _NO_ARGS
        state = self._enter()
        try:
            _input(message, &m, "message", _READ_ONCE)
            _input_or_none(aad, &ad, "aad", _READ_ONCE)
            if <size_t>m.len > sodium.crypto_secretstream_xchacha20poly1305_MESSAGEBYTES_MAX:
                raise ValueError("message is too long")
            result = PyBytes_FromStringAndSize(NULL, m.len + <Py_ssize_t>STREAM_OVERHEAD_BYTES)
            a.m = m.ptr
            a.mlen = <size_t>m.len
            a.ad = ad.ptr
            a.adlen = <size_t>ad.len
            a.out = <unsigned char *>PyBytes_AS_STRING(result)
            a.outlen = <size_t>PyBytes_GET_SIZE(result)
            a.flag = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL if final else \
                sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
            _run(&_PUSH, &a, None, None, state)
            self._finished = final
        finally:
            self._busy = False
            _release(&m)
            _release(&ad)
        return result


cdef class StreamDecryptor(_Stream):
    """Decrypt, in order, what a StreamEncryptor with the same key pushed
    after `header`.  Forged, reordered or cut messages are DecryptionError
    (the state is then unchanged); a stream closed before its final message
    is ValueError.  A context manager, as StreamEncryptor.
    """

    def __init__(self, key, header):
        cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES)
        cdef _In h = _NO_INPUT
        cdef _Args a = _NO_ARGS
        try:
            _input_fixed(header, &h, "header", sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES,
                         _READ_ONCE, NULL)
            a.nonce = h.ptr
            self._start(k, &_INIT_PULL, &a)
        finally:
            _release(&h)

    cdef object _pull(self, object ciphertext, object aad, SecureBuffer out, size_t *length):
        # The plaintext into `out` (a caller's buffer; returns None) or into
        # a new sealed SecureBuffer (returned), or nowhere when it is empty.
        cdef _In c = _NO_INPUT
        cdef _In ad = _NO_INPUT
        cdef _Args a = _NO_ARGS
        result = None
        state = self._enter()
        try:
            _input(ciphertext, &c, "ciphertext", _READ_TWICE)
            _input_or_none(aad, &ad, "aad", _READ_ONCE)
            if <size_t>c.len < sodium.crypto_secretstream_xchacha20poly1305_ABYTES:
                raise DecryptionError(f"ciphertext must be at least {STREAM_OVERHEAD_BYTES} bytes "
                                      f"long, not {c.len}")
            length[0] = <size_t>c.len - sodium.crypto_secretstream_xchacha20poly1305_ABYTES
            a.m = c.ptr
            a.mlen = <size_t>c.len
            a.ad = ad.ptr
            a.adlen = <size_t>ad.len
            if length[0] == 0:
                _run(&_PULL, &a, None, None, state)
            elif out is not None:
                _sink_arg(out, None, length[0])
                a.outlen = length[0]
                _run(&_PULL, &a, None, out, state)
            else:
                result = _run_into_new(&_PULL, &a, None, SecureBuffer(length[0]), None, state)
            self._finished = a.flag == sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
        finally:
            self._busy = False
            _release(&c)
            _release(&ad)
        return result

    def pull(self, ciphertext, *, aad=b""):
        """The next message as ``(plaintext, final)``: a new READONLY
        SecureBuffer, and True when it was the final message.

        An authentic empty message is consumed and raises a plain
        ValueError (a SecureBuffer cannot be empty): see `finished`, or use
        pull_into, which returns 0 for it.
        """
        cdef size_t length = 0
        plain = self._pull(ciphertext, aad, None, &length)
        if length == 0:
            raise ValueError("nothing to decrypt: the message is authentic but empty (a SecureBuffer "
                             "cannot be empty); it was consumed: see .finished, or use pull_into")
        return plain, self._finished

    def pull_into(self, ciphertext, out, *, aad=b""):
        """The next message into `out` (a writable SecureBuffer, reused) as
        ``(length, final)``.  `out` too small is ValueError and a forged
        message DecryptionError: `out` and the stream are then unchanged.
        """
        cdef size_t length = 0
        cdef SecureBuffer o = _secure_arg(out, "out", 0)
        self._pull(ciphertext, aad, o, &length)
        return <Py_ssize_t>length, self._finished
