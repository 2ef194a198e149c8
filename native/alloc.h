// A caching CPU allocator for libtorch. A training step frees and re-allocates the same large
// activation, gradient and scratch buffers every step; glibc hands blocks above its mmap threshold
// (and emptied per-thread arena heaps) back to the OS on free, so each reuse costs a page fault
// per 4 KiB (10-20K faults, 20-60 ms of system time per VGG16 step here). Large blocks freed here
// wait in a per-size cache for the next request of that size; small ones go to malloc as before.
#pragma once
#include <cstdint>

namespace cmi::alloc {

// Makes libtorch's CPU tensors use the cache from now on (blocks allocated before keep their own
// deleter). Idempotent; CMIPRUNE_CPU_CACHE_MB sets the cap on idle cached bytes (default 2048;
// 0 leaves libtorch's allocator alone).
void install();

struct Stats {
  bool installed;
  int64_t cachedBytes;  // idle, waiting for reuse
  int64_t hits, misses;  // large requests served from the cache / by a new block
};
Stats stats();

// Frees every idle cached block.
void emptyCache();

}  // namespace cmi::alloc
