/* The C floor under every row of the bench table: for each operation, the
 * same libsodium calls and system calls that securekeys makes for it, in
 * the same order, in C, with no Python.  The gap between a row's time and
 * its floor is what the Python layer costs; the floor itself is what the
 * protection costs (mprotect, the stack wipe, ...).
 *
 *     cc -O2 bench/floor.c -o /tmp/floor -lsodium && /tmp/floor DIR
 *
 * DIR holds k32 (32 bytes) and k1m (1 MiB), mode 0400, as bench/run.py
 * writes them.  Prints one line per floor, "floor NAME: MICROSECONDS us"
 * (the median of several rounds); bench/run.py puts each beside its rows.
 *
 * What the library does, mirrored here (strace of the Python calls shows
 * the same system calls):
 *   - a slot is [guard][data pages][guard], mlocked on fault, never dumped;
 *     a free small slot is kept READWRITE and zeroed, so a key's life is two
 *     mprotect calls (READONLY when filled, READWRITE again to wipe it);
 *   - a new buffer is zero-filled and gets a 16-byte canary before its data,
 *     checked and wiped with the data;
 *   - after each libsodium call on secrets the runner zeroes STACK_WIPE
 *     bytes of stack (the register clearing, a few instructions, is left
 *     out);
 *   - a KeyRing page is NOACCESS while it holds no key in use, so a ring
 *     key's life is four mprotect calls; a 1 MiB secret's huge-page slot goes
 *     back to PROT_NONE when wiped, so four there too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define HUGE_PAGE (2u << 20)
#define CANARY 16
#define STACK_WIPE 4096          /* _STACK_SMALL in securekeys/crypto_runner.pxi */
#define MESSAGE 64
#define STREAM_BYTES (64u << 20)
#define STREAM_CHUNK (64u << 10)
#define LIVE_KEYS 10000
#define RING_RUN_PAGES 64        /* _RING_RUN_PAGES in securekeys/memory_layout.pxi */

/* openat2(2)'s struct open_how and the flags read_key opens a key file with. */
struct open_how_ { uint64_t flags, mode, resolve; };
static const struct open_how_ strict_open = {
    O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | O_NONBLOCK, 0,
    0x04 /* RESOLVE_NO_SYMLINKS */ | 0x02 /* RESOLVE_NO_MAGICLINKS */ };

static void die(const char *what) { perror(what); exit(1); }

/* mlock2(MLOCK_ONFAULT), as the allocator does: past RLIMIT_MEMLOCK or
 * without CAP_IPC_LOCK the memory stays unlocked, which is no error there
 * (10,000 live keys need 80 MB locked) and none here. */
static void lock(void *start, size_t length) {
    if (mlock2(start, length, MLOCK_ONFAULT) != 0 && errno != ENOMEM && errno != EAGAIN && errno != EPERM)
        die("mlock2");
}

/* -- slots --------------------------------------------------------------- */

struct slot {
    unsigned char *start;        /* the first data page */
    size_t length;               /* its pages */
    unsigned char *canary;       /* CANARY bytes, then the data up to the guard */
    unsigned char *data;
    size_t size;
};

static unsigned char canary_bytes[CANARY];

/* A READWRITE slot of `size` bytes between guard pages, set up as the
 * allocator sets up a chunk (not timed).  `huge`: on a 2 MiB boundary,
 * MADV_HUGEPAGE, as securekeys places secrets of 1 MiB and more. */
static struct slot slot_new(size_t size, int huge) {
    struct slot s;
    size_t align = huge ? HUGE_PAGE : PAGE;
    size_t pages = (size + CANARY + align - 1) / align * align;
    unsigned char *raw = mmap(NULL, pages + 2 * PAGE + align, PROT_NONE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) die("mmap");
    s.start = (unsigned char *)(((uintptr_t)raw + PAGE + align - 1) & ~(uintptr_t)(align - 1));
    s.length = pages;
    if (madvise(s.start - PAGE, pages + 2 * PAGE, MADV_DONTDUMP) != 0) die("madvise");
    if (huge) madvise(s.start, pages, MADV_HUGEPAGE);   /* best effort, as the library */
    lock(s.start - PAGE, pages + 2 * PAGE);
    if (mprotect(s.start, pages, PROT_READ | PROT_WRITE) != 0) die("mprotect");
    s.size = size;
    s.data = s.start + pages - size;
    s.canary = s.data - CANARY;
    memset(s.start, 0, pages);   /* fault every page in, as a used slot is */
    return s;
}

static void protect(const struct slot *s, int prot) {
    if (mprotect(s->start, s->length, prot) != 0) die("mprotect");
}

/* A KeyRing's first key: the first page of a run of RING_RUN_PAGES
 * NOACCESS pages between two guard pages, one mapping, so that making that
 * page accessible splits the mapping and making it NOACCESS again merges it,
 * as in a ring. */
static struct slot ring_page_new(void) {
    struct slot s;
    size_t length = (RING_RUN_PAGES + 2) * PAGE;
    unsigned char *base = mmap(NULL, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) die("mmap");
    if (madvise(base, length, MADV_DONTDUMP) != 0) die("madvise");
    lock(base, length);
    s.start = base + PAGE;
    s.length = PAGE;
    s.size = 32;
    s.data = s.start + PAGE - s.size;
    s.canary = s.data - CANARY;
    return s;
}

/* Taking a free writable slot: zero-filled, a fresh canary. */
static void slot_take(const struct slot *s) {
    memset(s->canary, 0, CANARY + s->size);
    memcpy(s->canary, canary_bytes, CANARY);
}

/* Wiping it in place: check the canary, zero canary and data. */
static void slot_wipe(const struct slot *s) {
    if (sodium_memcmp(s->canary, canary_bytes, CANARY) != 0) die("canary");
    sodium_memzero(s->canary, CANARY + s->size);
}

/* The rest of a filled buffer's life: sealed READONLY, then, at destroy()
 * or deallocation, made writable again and wiped. */
static void seal_then_wipe(const struct slot *s) {
    protect(s, PROT_READ);
    protect(s, PROT_READ | PROT_WRITE);
    slot_wipe(s);
}

/* A libsodium call on secrets is followed by the runner's stack wipe:
 * STACK_WIPE bytes below the caller, zeroed 2 KiB at a time
 * (securekeys_stackzero in securekeys/_wipe.pxd). */
static __attribute__((noinline)) void wipe_stack(void) {
    unsigned char fodder[STACK_WIPE];
    for (size_t done = 0; done < STACK_WIPE; done += 2048)
        sodium_memzero(fodder + done, 2048);
}

/* -- the state every floor works on (set up in main, not timed) ------------ */

static struct slot small, plain, key_slot, noaccess_key, ring_page, big, stream_state, stream_out;
static const char *k32_path, *k1m_path;
static unsigned char nonce[24], message[MESSAGE];
static unsigned char box[MESSAGE + 16], tag[32];
static unsigned char box_pk[32], sealed[MESSAGE + 48];
static struct slot box_sk;
static unsigned char stream_header[24];
static unsigned char *stream_in, *stream_boxes;

/* read_key's C path: openat2, fstat and the strict rules, read, the
 * end-of-file probe, close. */
static void read_file(const char *path, unsigned char *data, size_t size) {
    struct stat st;
    unsigned char probe;
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &strict_open, sizeof strict_open);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()
        || (st.st_mode & 07077) != 0 || st.st_nlink != 1 || st.st_size != (off_t)size)
        die("open key file");
    if (read(fd, data, size) != (ssize_t)size || read(fd, &probe, 1) != 0) die("read");
    sodium_memzero(&probe, 1);
    if (close(fd) != 0) die("close");
}

/* -- the floors, one per operation ---------------------------------------- */

static void floor_create_key(void) {
    slot_take(&small);
    randombytes_buf(small.data, 32);
    seal_then_wipe(&small);
}

/* A KeyRing key: its page is NOACCESS before and after (four mprotect
 * calls, each splitting or merging the run's mapping). */
static void floor_ring_create_key(void) {
    protect(&ring_page, PROT_READ | PROT_WRITE);
    memcpy(ring_page.canary, canary_bytes, CANARY);
    randombytes_buf(ring_page.data, 32);
    seal_then_wipe(&ring_page);
    protect(&ring_page, PROT_NONE);
}

static void floor_pool(void) {
    slot_take(&small);
    slot_wipe(&small);
}

static void floor_read_key(void) {
    slot_take(&small);
    read_file(k32_path, small.data, 32);
    seal_then_wipe(&small);
}

static void floor_ring_read_key(void) {
    protect(&ring_page, PROT_READ | PROT_WRITE);
    memcpy(ring_page.canary, canary_bytes, CANARY);
    read_file(k32_path, ring_page.data, 32);
    seal_then_wipe(&ring_page);
    protect(&ring_page, PROT_NONE);
}

/* 1 MiB: a huge-page slot, PROT_NONE while free. */
static void floor_read_key_1m(void) {
    protect(&big, PROT_READ | PROT_WRITE);
    memcpy(big.canary, canary_bytes, CANARY);
    read_file(k1m_path, big.data, big.size);
    seal_then_wipe(&big);
    protect(&big, PROT_NONE);
}

/* LIVE_KEYS READONLY one-page slots, each between guard pages (two mappings
 * each), mapped before read_key's floor runs again among them. */
static void make_live_keys(void) {
    size_t length = (2 * (size_t)LIVE_KEYS + 1) * PAGE;
    unsigned char *base = mmap(NULL, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) die("mmap");
    lock(base, length);
    for (size_t i = 0; i < LIVE_KEYS; i++) {
        unsigned char *page = base + (1 + 2 * i) * PAGE;
        if (mprotect(page, PAGE, PROT_READ | PROT_WRITE) != 0) die("mprotect");
        randombytes_buf(page + PAGE - 32, 32);
        if (mprotect(page, PAGE, PROT_READ) != 0) die("mprotect");
    }
}

static void floor_aead_encrypt(void) {
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(box, NULL, message, MESSAGE, NULL, 0, NULL, nonce,
                                                   key_slot.data) != 0) die("encrypt");
    wipe_stack();
}

/* The key NOACCESS at rest: borrowed READONLY for the call. */
static void floor_aead_encrypt_noaccess(void) {
    protect(&noaccess_key, PROT_READ);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(box, NULL, message, MESSAGE, NULL, 0, NULL, nonce,
                                                   noaccess_key.data) != 0) die("encrypt");
    wipe_stack();
    protect(&noaccess_key, PROT_NONE);
}

static void floor_mac(void) {
    if (crypto_auth(tag, message, MESSAGE, key_slot.data) != 0) die("auth");
    wipe_stack();
}

/* A new guarded plaintext: taken, written by libsodium, sealed READONLY,
 * and at deallocation made writable to wipe it. */
static void floor_aead_decrypt(void) {
    slot_take(&plain);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain.data, NULL, NULL, box, sizeof box,
                                                   NULL, 0, nonce, key_slot.data) != 0) die("decrypt");
    wipe_stack();
    seal_then_wipe(&plain);
}

/* Into a reused READWRITE buffer: the tag is checked alone first, so that a
 * forged message leaves the buffer as it was. */
static void floor_aead_decrypt_into(void) {
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(NULL, NULL, NULL, box, sizeof box,
                                                   NULL, 0, nonce, key_slot.data) != 0
        || crypto_aead_xchacha20poly1305_ietf_decrypt(plain.data, NULL, NULL, box, sizeof box,
                                                      NULL, 0, nonce, key_slot.data) != 0) die("decrypt");
    wipe_stack();
}

static void floor_encrypt(void) {
    unsigned char random_nonce[24];
    randombytes_buf(random_nonce, sizeof random_nonce);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(box, NULL, message, MESSAGE, NULL, 0, NULL,
                                                   random_nonce, key_slot.data) != 0) die("encrypt");
    wipe_stack();
}

static void floor_box_seal(void) {
    if (crypto_box_seal(sealed, message, MESSAGE, box_pk) != 0) die("box_seal");
    wipe_stack();
}

static void floor_box_seal_open(void) {
    slot_take(&plain);
    if (crypto_box_seal_open(plain.data, sealed, sizeof sealed, box_pk, box_sk.data) != 0) die("box_seal_open");
    wipe_stack();
    seal_then_wipe(&plain);
}

/* A stream's state is a guarded buffer, NOACCESS between calls: each
 * message borrows it for writing (two mprotect calls). */
static void floor_stream_push(void) {
    crypto_secretstream_xchacha20poly1305_state *state = (void *)stream_state.data;
    size_t count = STREAM_BYTES / STREAM_CHUNK;
    slot_take(&stream_state);
    if (crypto_secretstream_xchacha20poly1305_init_push(state, stream_header, key_slot.data) != 0)
        die("init_push");
    wipe_stack();
    protect(&stream_state, PROT_NONE);
    for (size_t i = 0; i < count; i++) {
        protect(&stream_state, PROT_READ | PROT_WRITE);
        if (crypto_secretstream_xchacha20poly1305_push(
                state, stream_boxes + i * (STREAM_CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES), NULL,
                stream_in, STREAM_CHUNK, NULL, 0,
                i + 1 == count ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                               : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) != 0) die("push");
        wipe_stack();
        protect(&stream_state, PROT_NONE);
    }
    protect(&stream_state, PROT_READ | PROT_WRITE);   /* close(): wipe the state */
    slot_wipe(&stream_state);
}

/* Pulling what floor_stream_push wrote into one reused READWRITE buffer. */
static void floor_stream_pull_into(void) {
    crypto_secretstream_xchacha20poly1305_state *state = (void *)stream_state.data;
    size_t count = STREAM_BYTES / STREAM_CHUNK;
    unsigned char got;
    slot_take(&stream_state);
    if (crypto_secretstream_xchacha20poly1305_init_pull(state, stream_header, key_slot.data) != 0) die("init_pull");
    wipe_stack();
    protect(&stream_state, PROT_NONE);
    for (size_t i = 0; i < count; i++) {
        protect(&stream_state, PROT_READ | PROT_WRITE);
        if (crypto_secretstream_xchacha20poly1305_pull(
                state, stream_out.data, NULL, &got,
                stream_boxes + i * (STREAM_CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES),
                STREAM_CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES, NULL, 0) != 0) die("pull");
        wipe_stack();
        protect(&stream_state, PROT_NONE);
    }
    protect(&stream_state, PROT_READ | PROT_WRITE);
    slot_wipe(&stream_state);
}

/* -- timing ---------------------------------------------------------------- */

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median over `rounds` rounds of the per-call time of `n` calls. */
static void report(const char *name, void (*floor)(void), int n, int rounds) {
    double per_call[15];
    floor();                      /* warm up */
    for (int r = 0; r < rounds; r++) {
        double t0 = now_us();
        for (int i = 0; i < n; i++) floor();
        per_call[r] = (now_us() - t0) / n;
    }
    qsort(per_call, (size_t)rounds, sizeof per_call[0], by_value);
    printf("floor %s: %.3f us\n", name, per_call[rounds / 2]);
    fflush(stdout);
}

static void setup(const char *dir) {
    static char k32[4096], k1m[4096];
    snprintf(k32, sizeof k32, "%s/k32", dir);
    snprintf(k1m, sizeof k1m, "%s/k1m", dir);
    k32_path = k32;
    k1m_path = k1m;
    randombytes_buf(canary_bytes, CANARY);
    randombytes_buf(nonce, sizeof nonce);
    randombytes_buf(message, sizeof message);
    small = slot_new(32, 0);
    plain = slot_new(MESSAGE, 0);
    key_slot = slot_new(32, 0);                  /* READONLY at rest, as create_key's */
    randombytes_buf(key_slot.data, 32);
    protect(&key_slot, PROT_READ);
    noaccess_key = slot_new(32, 0);               /* the same key, NOACCESS at rest */
    memcpy(noaccess_key.data, key_slot.data, 32);
    protect(&noaccess_key, PROT_NONE);
    box_sk = slot_new(32, 0);
    if (crypto_box_keypair(box_pk, box_sk.data) != 0) die("box_keypair");
    protect(&box_sk, PROT_READ);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(box, NULL, message, MESSAGE, NULL, 0, NULL, nonce,
                                                   key_slot.data) != 0
        || crypto_box_seal(sealed, message, MESSAGE, box_pk) != 0) die("setup");
    ring_page = ring_page_new();
    big = slot_new(1u << 20, 1);
    protect(&big, PROT_NONE);
    stream_state = slot_new(sizeof(crypto_secretstream_xchacha20poly1305_state), 0);
    stream_out = slot_new(STREAM_CHUNK, 0);
    stream_in = calloc(1, STREAM_CHUNK);
    stream_boxes = malloc((size_t)(STREAM_BYTES / STREAM_CHUNK) *
                          (STREAM_CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES));
    if (stream_in == NULL || stream_boxes == NULL) die("malloc");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR (holding k32 and k1m)\n", argv[0]);
        return 2;
    }
    if (sodium_init() < 0) die("sodium_init");
    setup(argv[1]);
    report("create_key", floor_create_key, 20000, 9);
    report("ring_create_key", floor_ring_create_key, 10000, 9);
    report("pool", floor_pool, 200000, 9);
    report("read_key", floor_read_key, 5000, 9);
    report("ring_read_key", floor_ring_read_key, 5000, 9);
    report("read_key_1m", floor_read_key_1m, 200, 9);
    report("aead_encrypt", floor_aead_encrypt, 50000, 9);
    report("aead_encrypt_noaccess", floor_aead_encrypt_noaccess, 20000, 9);
    report("mac", floor_mac, 50000, 9);
    report("aead_decrypt", floor_aead_decrypt, 20000, 9);
    report("aead_decrypt_into", floor_aead_decrypt_into, 50000, 9);
    report("encrypt", floor_encrypt, 50000, 9);
    report("box_seal", floor_box_seal, 500, 9);
    report("box_seal_open", floor_box_seal_open, 500, 9);
    report("stream_push", floor_stream_push, 1, 5);
    report("stream_pull_into", floor_stream_pull_into, 1, 5);
    make_live_keys();             /* last: every floor above runs without them */
    report("read_key_live", floor_read_key, 5000, 9);
    return 0;
}
