# Internal: zeroing what a computation on secret bytes leaves on its own
# thread, cimported by securekeys' own extension modules only (`cdef inline`
# and a static C function: each module compiles its own copy, part of no
# ABI, like _checks.pxd).
#
# A call on secrets leaves them in two places after it returns: its dead
# stack frames (libsodium 1.0.18 leaves BLAKE2b's output buffer, ChaCha20's
# last block, message words, ...), and the registers a callee may clobber
# (x86-64: rax, rcx, rdx, rsi, rdi, r8-r11 and every vector register; a
# plain memcpy leaves the bytes it copied in xmm0/xmm1).  The next code to
# spill those registers (a variadic function's register save area, the
# dynamic linker's lazy binding, which saves every vector register with
# xsave) writes them to the stack above any zeroed area, so both are
# zeroed.  Registers on x86-64 only (GCC/Clang); elsewhere, and in a build
# with SECUREKEYS_PORTABLE defined (setup.py: SECUREKEYS_PORTABLE=1, which
# tests/test_portable_build.py uses to run this path on x86-64), only the
# stack: a secret a stale register spills later is then not covered.
from securekeys.includes cimport sodium

cdef extern from *:
    """
    /* sodium_stackzero(len), in pieces: a variable-length array just below
       the caller's frame, zeroed with sodium_memzero (which the compiler
       cannot drop) at most 2 KiB at a time.  glibc's memset, under
       sodium_memzero, switches to `rep stosb` above 2 KiB, whose start-up
       cost made a 4 KiB wipe take 64 ns against 41 ns in two pieces (AMD
       EPYC, glibc 2.36; the best of 300 rounds): the wipe is a tenth of a
       64-byte aead_encrypt.  noinline: the array must be in a frame of its
       own, below the caller's, where the callee's dead frames were. */
    static __attribute__((noinline)) void securekeys_stackzero(size_t len)
    {
        size_t done, piece;
        if (len == 0)
            return;
        {
            unsigned char fodder[len];
            for (done = 0; done < len; done += piece) {
                piece = len - done < 2048 ? len - done : 2048;
                sodium_memzero(fodder + done, piece);
            }
        }
    }

    static void securekeys_clear_registers(int has_avx, int has_avx512f)
    {
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SECUREKEYS_PORTABLE)
        __asm__ __volatile__(
            "xorl %%eax, %%eax\\n\\t" "xorl %%ecx, %%ecx\\n\\t" "xorl %%edx, %%edx\\n\\t"
            "xorl %%esi, %%esi\\n\\t" "xorl %%edi, %%edi\\n\\t" "xorl %%r8d, %%r8d\\n\\t"
            "xorl %%r9d, %%r9d\\n\\t" "xorl %%r10d, %%r10d\\n\\t" "xorl %%r11d, %%r11d"
            ::: "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "cc");
        if (has_avx) {
            /* All of ymm0-15 (zmm0-15 with AVX-512). */
            __asm__ __volatile__("vzeroall" ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
                                 "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
                                 "xmm13", "xmm14", "xmm15");
        } else {
            __asm__ __volatile__(
                "pxor %%xmm0, %%xmm0\\n\\t" "pxor %%xmm1, %%xmm1\\n\\t" "pxor %%xmm2, %%xmm2\\n\\t"
                "pxor %%xmm3, %%xmm3\\n\\t" "pxor %%xmm4, %%xmm4\\n\\t" "pxor %%xmm5, %%xmm5\\n\\t"
                "pxor %%xmm6, %%xmm6\\n\\t" "pxor %%xmm7, %%xmm7\\n\\t" "pxor %%xmm8, %%xmm8\\n\\t"
                "pxor %%xmm9, %%xmm9\\n\\t" "pxor %%xmm10, %%xmm10\\n\\t" "pxor %%xmm11, %%xmm11\\n\\t"
                "pxor %%xmm12, %%xmm12\\n\\t" "pxor %%xmm13, %%xmm13\\n\\t" "pxor %%xmm14, %%xmm14\\n\\t"
                "pxor %%xmm15, %%xmm15"
                ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                    "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
        }
        if (has_avx512f) {
            /* zmm16-31 exist only with AVX-512; the compiler does not use
               them here, so they need no clobber. */
            __asm__ __volatile__(
                "vpxord %%zmm16, %%zmm16, %%zmm16\\n\\t" "vpxord %%zmm17, %%zmm17, %%zmm17\\n\\t"
                "vpxord %%zmm18, %%zmm18, %%zmm18\\n\\t" "vpxord %%zmm19, %%zmm19, %%zmm19\\n\\t"
                "vpxord %%zmm20, %%zmm20, %%zmm20\\n\\t" "vpxord %%zmm21, %%zmm21, %%zmm21\\n\\t"
                "vpxord %%zmm22, %%zmm22, %%zmm22\\n\\t" "vpxord %%zmm23, %%zmm23, %%zmm23\\n\\t"
                "vpxord %%zmm24, %%zmm24, %%zmm24\\n\\t" "vpxord %%zmm25, %%zmm25, %%zmm25\\n\\t"
                "vpxord %%zmm26, %%zmm26, %%zmm26\\n\\t" "vpxord %%zmm27, %%zmm27, %%zmm27\\n\\t"
                "vpxord %%zmm28, %%zmm28, %%zmm28\\n\\t" "vpxord %%zmm29, %%zmm29, %%zmm29\\n\\t"
                "vpxord %%zmm30, %%zmm30, %%zmm30\\n\\t" "vpxord %%zmm31, %%zmm31, %%zmm31" ::: "memory");
        }
    #else
        (void) has_avx;
        (void) has_avx512f;
    #endif
    }
    """
    void securekeys_stackzero(size_t len) nogil
    void securekeys_clear_registers(int has_avx, int has_avx512f) nogil


cdef inline void wipe_stack_and_registers(size_t stack) noexcept nogil:
    # Call right after the computation, on the same thread, before anything
    # else runs there: `stack` bytes below the caller's frame are zeroed
    # (as sodium_stackzero does), then the caller-saved registers.
    # libsodium's runtime flags are what it detected at sodium_init(), which
    # _memory runs at import.
    securekeys_stackzero(stack)
    securekeys_clear_registers(sodium.sodium_runtime_has_avx(), sodium.sodium_runtime_has_avx512f())
