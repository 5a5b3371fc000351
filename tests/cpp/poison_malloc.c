// LD_PRELOAD for the ARM runs under qemu: every malloc'ed block, and 256 bytes past its end, is
// filled with 0xFF bytes (NaN as float16 and float32). A Paddle Lite kernel that reads memory it
// did not write (an over-read past a weight buffer, data of the wrong precision) then gives NaN
// or crashes on every run instead of now and then, depending on what the heap held.
#include <errno.h>
#include <stddef.h>
#include <string.h>

extern void* __libc_malloc(size_t);
extern void* __libc_memalign(size_t, size_t);

#define PAD 256

void* malloc(size_t n) {
  void* p = __libc_malloc(n + PAD);
  if (p) memset(p, 0xFF, n + PAD);
  return p;
}

void* memalign(size_t align, size_t n) {
  void* p = __libc_memalign(align, n + PAD);
  if (p) memset(p, 0xFF, n + PAD);
  return p;
}

void* aligned_alloc(size_t align, size_t n) { return memalign(align, n); }

int posix_memalign(void** out, size_t align, size_t n) {
  void* p = memalign(align, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
