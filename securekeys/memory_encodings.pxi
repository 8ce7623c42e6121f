# Included by _memory.pyx: keys as text (hex, base64, base64url).
#
# Text is decoded from a guarded buffer straight into a new key, and encoded
# from a key into a new guarded buffer, by libsodium's codecs, which run in
# time independent of the content.  Nothing handed back to Python depends on
# a key byte: a length, a position or a verdict, never content.

cdef enum:
    _HEX = 0
    _BASE64 = 1
    _BASE64URL = 2
    # Stack bytes to zero after a codec, as after every crypto call: the
    # codecs keep a few bytes of state in locals and registers.
    _CODEC_STACK = 1024


cdef int _text_kind(str encoding) except -1:
    if encoding == "hex":
        return _HEX
    if encoding == "base64":
        return _BASE64
    if encoding == "base64url":
        return _BASE64URL
    raise ValueError(f"unknown text encoding {encoding!r}: hex, base64 or base64url")


cdef size_t _padded_length(size_t n, int kind) noexcept nogil:
    if kind == _HEX:
        return 2 * n
    return (n + 2) // 3 * 4


cdef size_t _unpadded_length(size_t n, int kind) noexcept nogil:
    # base64 without "=": 2 characters for a last byte, 3 for two.
    cdef size_t rest = n % 3
    if kind == _HEX:
        return 2 * n
    return n // 3 * 4 + (rest + 1 if rest else 0)


cdef int _variant(int kind, bint padded) noexcept nogil:
    if kind == _BASE64URL:
        if padded:
            return sodium.sodium_base64_VARIANT_URLSAFE
        return sodium.sodium_base64_VARIANT_URLSAFE_NO_PADDING
    if padded:
        return sodium.sodium_base64_VARIANT_ORIGINAL
    return sodium.sodium_base64_VARIANT_ORIGINAL_NO_PADDING


def _text_lengths(size, str encoding):
    """(padded, unpadded): the characters a `size`-byte key takes in
    `encoding`, without a newline (the same for hex, and for base64 when
    `size` is a multiple of 3)."""
    cdef size_t n = _checked_size(size)
    cdef int kind = _text_kind(encoding)
    return _padded_length(n, kind), _unpadded_length(n, kind)


cdef int _decode(unsigned char *key, size_t n, const char *text, size_t length,
                 int kind, size_t *got, const char **end) noexcept nogil:
    # Padding is checked apart (_padding_end), so base64 is always decoded
    # unpadded: a failure is then either a character outside the alphabet
    # (*end stops short of the text's end) or trailing bits beyond the key.
    if kind == _HEX:
        return sodium.sodium_hex2bin(key, n, text, length, NULL, got, end)
    return sodium.sodium_base642bin(key, n, text, length, NULL, got, end, _variant(kind, False))


cdef size_t _padding_end(const char *pad, size_t count) noexcept nogil:
    # How many of `count` padding characters are "=" before one is not.
    # "=" carries no key bits: looking at it leaks nothing.
    cdef size_t i
    for i in range(count):
        if pad[i] != b"=":
            return i
    return count


def _decode_text(SecureKey key not None, SecureBuffer text not None, size_t length,
                 str encoding):
    """Decode the first `length` bytes of `text` straight into the new
    (READWRITE, unfilled) `key`.  One trailing newline (LF or CRLF) may end
    the text; nothing else but the encoding's alphabet and base64's "="
    padding (no whitespace, no line breaks inside).  Returns (verdict, number):

      ("ok", 0)           the key holds the decoded bytes;
      ("length", n)       the text is n characters: wrong for this key size;
      ("invalid", i)      character i (from 1) is outside the alphabet here;
      ("alphabet", 0)     the text is valid in the other base64 alphabet;
      ("padding", i)      character i (from 1) should be "=": base64 of the
                          padded length ends in padding;
      ("bits", 0)         the last character holds bits beyond the key.

    On any verdict but "ok" the key holds garbage: the caller destroys it.
    """
    cdef int kind = _text_kind(encoding)
    cdef size_t n = key._size
    cdef size_t data = _unpadded_length(n, kind)
    cdef size_t got = 0
    cdef size_t padding
    cdef const char *end = NULL
    cdef const char *other_end = NULL
    cdef int rc
    cdef size_t i
    if length > text._size:
        raise ValueError(f"length {length} is past the end of a {text._size}-byte buffer")
    cdef unsigned char *out = key.fill_ptr()
    cdef const char *src = <const char *>text.borrow_read()
    try:
        if length > 0 and src[length - 1] == b"\n":
            length -= 1
            if length > 0 and src[length - 1] == b"\r":
                length -= 1
        if length != _padded_length(n, kind) and length != data:
            return "length", length
        # libsodium 1.0.18 reads every byte past 0x7f as base64's last
        # character: refuse them here, or a stray UTF-8 character or one
        # corrupted byte would decode into a different key without a word.
        for i in range(length):
            if <unsigned char>src[i] > 0x7f:
                return "invalid", i + 1
        rc = _decode(out, n, src, data, kind, &got, &end)
        if end != src + data:
            if kind != _HEX and _decode(out, n, src, data, _BASE64 + _BASE64URL - kind,
                                        &got, &other_end) == 0 and other_end == src + data:
                return "alphabet", 0
            return "invalid", <size_t>(end - src) + 1
        padding = _padding_end(src + data, length - data)
        if padding != length - data:
            return "padding", data + padding + 1
        if rc != 0 or got != n:
            return "bits", 0
        return "ok", 0
    finally:
        wipe_stack_and_registers(_CODEC_STACK)   # the codec's locals held key bits
        text.release_read()


def _encode_text(SecureBuffer key not None, str encoding):
    """A new READONLY SecureBuffer holding `key` in `encoding` (with "="
    padding for base64) and a final newline, encoded from guarded memory
    into guarded memory.  A NOACCESS key is borrowed and returned to NOACCESS."""
    cdef int kind = _text_kind(encoding)
    cdef size_t n = key._size
    cdef size_t length = _padded_length(n, kind)
    cdef const unsigned char *src = key.borrow_read()   # a destroyed key dies here
    cdef SecureBuffer text
    cdef char *dst = NULL
    try:
        text = SecureBuffer(length + 1)
        dst = <char *>text.fill_ptr()
        # Both write a terminating NUL at dst[length]: the newline replaces it.
        if kind == _HEX:
            sodium.sodium_bin2hex(dst, length + 1, src, n)
        else:
            sodium.sodium_bin2base64(dst, length + 1, src, n, _variant(kind, True))
        wipe_stack_and_registers(_CODEC_STACK)
    finally:
        key.release_read()
    dst[length] = b"\n"
    text.readonly()
    return text
