# Included by _memory.pyx: KeyRing, many small keys packed into shared pages.

cdef class KeyRing:
    """A dense store for many small keys of one size.

    Keys are packed into shared guarded, locked pages (a canary before each
    key, guard pages around each run of 64 pages), so that 100,000 32-byte
    keys fit in a few MiB of locked memory and a handful of mappings.  Its
    keys are ordinary SecureKeys; the trade-off is that protection is per
    page: while one key is borrowed, its page-mates are readable too, and a
    page is as accessible as its most accessible key.
    """

    def __cinit__(self, key_size):
        global _rings
        _settle_fork()
        cdef size_t n = _checked_size(key_size)
        if n > _page_size - _CANARY_SIZE:
            raise ValueError(f"KeyRing keys must be at most {_page_size - _CANARY_SIZE} bytes, not {n}")
        cdef Ring *ring = <Ring *>calloc(1, sizeof(Ring))
        if ring == NULL:
            raise MemoryError("cannot allocate a KeyRing")
        ring.key_size = n
        ring.stride = _CANARY_SIZE + n
        ring.per_page = _page_size // ring.stride
        ring.backend = _backend
        ring.next = _rings
        _rings = ring
        self._c_ring = ring

    def __dealloc__(self):
        # Runs only once every key is gone: keys keep their ring alive.
        global _rings
        cdef Ring *ring = <Ring *>self._c_ring
        cdef Chunk *chunk = _chunks
        cdef Chunk *next_chunk
        cdef Ring **link = &_rings
        if ring == NULL:
            return
        while chunk != NULL:
            next_chunk = chunk.next
            if chunk.ring == ring:
                _unmap_chunk(chunk)
            chunk = next_chunk
        while link[0] != NULL and link[0] != ring:
            link = &link[0].next
        if link[0] == ring:
            link[0] = ring.next
        free(ring)

    @property
    def key_size(self):
        """The size of every key in this ring."""
        return (<Ring *>self._c_ring).key_size

    def __len__(self):
        """Keys in the ring that are not destroyed."""
        _settle_fork()
        return (<Ring *>self._c_ring).keys

    def __repr__(self):
        return f"<KeyRing key_size={self.key_size} keys={len(self)}>"

    def _new_key(self):
        """An empty READWRITE SecureKey from this ring, to be filled."""
        return SecureKey((<Ring *>self._c_ring).key_size, self)

    def create_key(self):
        """A new random key in this ring, READONLY."""
        cdef SecureKey key = SecureKey((<Ring *>self._c_ring).key_size, self)
        _fill_random(key, "KeyRing.create_key()", False)
        return key

    def read_key(self, path, *, trust="strict", encoding="raw", beneath=None):
        """Read a key file into this ring, with every check and option of read_key()."""
        key = self._new_key()
        if trust == "strict" and encoding == "raw" and beneath is None and _read_key_strict(key, path):
            return key     # the plain case, in one C function, as read_key() does
        from securekeys.files import fill_key_from_file
        fill_key_from_file(key, path, trust, encoding, beneath)
        return key

    def destroy(self):
        """Destroy every key in the ring; it then takes no new keys.

        Like wipe_all(), it does not wait for calls using its keys: they are
        wiped now, and such a call fails (KeyDestroyedError) or, if it touches
        the key again, ends the process.
        """
        cdef void *node = _registry_head
        cdef SecureBuffer buf
        while node != NULL:
            buf = <SecureBuffer>node
            node = buf._c_next
            if buf._owner is self:
                _destroy_buffer(buf, True)
        (<Ring *>self._c_ring).closed = True
