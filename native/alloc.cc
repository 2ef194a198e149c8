#include "alloc.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace cmi::alloc {
namespace {

constexpr size_t kMinCached = size_t{1} << 20;  // below this, malloc's arenas reuse memory well
constexpr size_t kPage = 4096;

struct Cache {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> idle;  // rounded size -> idle blocks
  std::unordered_map<void*, size_t> live;     // large block -> rounded size
  size_t cachedBytes = 0, capBytes = 0;
  int64_t hits = 0, misses = 0;
  bool installed = false;
};

// never destroyed: tensors may be freed during static destruction
Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

// One deleter for every block (libtorch's raw_allocate needs a single one): small blocks are not
// in `live` and go straight back to malloc.
void freeBlock(void* p) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.live.find(p);
  if (it == c.live.end()) {
    c10::free_cpu(p);
    return;
  }
  const size_t size = it->second;
  c.live.erase(it);
  if (c.cachedBytes + size > c.capBytes) {
    c10::free_cpu(p);
    return;
  }
  c.idle[size].push_back(p);
  c.cachedBytes += size;
}

class CachingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n < kMinCached) {
      void* p = c10::alloc_cpu(n);
      return {p, p, &freeBlock, cpu};
    }
    const size_t size = (n + kPage - 1) / kPage * kPage;
    Cache& c = cache();
    {
      std::lock_guard<std::mutex> lock(c.mu);
      auto it = c.idle.find(size);
      if (it != c.idle.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        c.cachedBytes -= size;
        c.live.emplace(p, size);
        ++c.hits;
        return {p, p, &freeBlock, cpu};
      }
      ++c.misses;
    }
    void* p = nullptr;
    try {
      p = c10::alloc_cpu(size);
    } catch (const c10::Error&) {  // out of memory: give the idle blocks back and try once more
      emptyCache();
      p = c10::alloc_cpu(size);
    }
    std::lock_guard<std::mutex> lock(c.mu);
    c.live.emplace(p, size);
    return {p, p, &freeBlock, cpu};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &freeBlock; }
};

}  // namespace

void install() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.installed) return;
  int64_t capMb = 2048;
  if (const char* env = std::getenv("CMIPRUNE_CPU_CACHE_MB")) capMb = std::atoll(env);
  if (capMb <= 0) return;
  c.capBytes = static_cast<size_t>(capMb) << 20;
  static CachingAllocator allocator;
  // priority 1: above libtorch's default CPU allocator (0)
  c10::SetCPUAllocator(&allocator, 1);
  c.installed = true;
}

Stats stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return {c.installed, static_cast<int64_t>(c.cachedBytes), c.hits, c.misses};
}

void emptyCache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [size, blocks] : c.idle)
    for (void* p : blocks) c10::free_cpu(p);
  c.idle.clear();
  c.cachedBytes = 0;
}

}  // namespace cmi::alloc
