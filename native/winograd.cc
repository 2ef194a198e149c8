// F(4x4, 3x3): y_tile = A^T [ (G g G^T) .* (B^T d B) ] A over 6x6 input tiles d that overlap by 2.
// Layout: transformed inputs V [36, C, T] and filters U [36, Cout, Cin] so each of the 36
// element-wise products summed over channels is one GEMM  M[xi] = U[xi] V[xi]  ([Cout, T]).
// Tile t = (n * tilesH + ty) * tilesW + tx.
#include "winograd.h"

#include "gemm.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

namespace cmi::winograd {
namespace {

constexpr int64_t kXi = 36;  // 6x6 transform points

// B^T d for one 6-vector (rows of B^T from Lavin & Gray, points 0, +-1, +-2, inf)
template <typename T>
inline void bt6(const T d0, const T d1, const T d2, const T d3, const T d4, const T d5, T* r) {
  r[0] = 4 * d0 - 5 * d2 + d4;
  r[1] = -4 * d1 - 4 * d2 + d3 + d4;
  r[2] = 4 * d1 - 4 * d2 - d3 + d4;
  r[3] = -2 * d1 - d2 + 2 * d3 + d4;
  r[4] = 2 * d1 - d2 - 2 * d3 + d4;
  r[5] = 4 * d1 - 5 * d3 + d5;
}
// B v (adjoint of B^T): 6 -> 6
template <typename T>
inline void b6(const T v0, const T v1, const T v2, const T v3, const T v4, const T v5, T* r) {
  r[0] = 4 * v0;
  r[1] = -4 * v1 + 4 * v2 - 2 * v3 + 2 * v4 + 4 * v5;
  r[2] = -5 * v0 - 4 * v1 - 4 * v2 - v3 - v4;
  r[3] = v1 - v2 + 2 * v3 - 2 * v4 - 5 * v5;
  r[4] = v0 + v1 + v2 + v3 + v4;
  r[5] = v5;
}
// A^T m: 6 -> 4
inline void at4(const float* m, int64_t s, float* o) {
  float m0 = m[0], m1 = m[s], m2 = m[2 * s], m3 = m[3 * s], m4 = m[4 * s], m5 = m[5 * s];
  o[0] = m0 + m1 + m2 + m3 + m4;
  o[1] = m1 - m2 + 2 * m3 - 2 * m4;
  o[2] = m1 + m2 + 4 * m3 + 4 * m4;
  o[3] = m1 - m2 + 8 * m3 - 8 * m4 + m5;
}
// A dy (adjoint of A^T): 4 -> 6
template <typename T>
inline void a6(const T y0, const T y1, const T y2, const T y3, T* r) {
  r[0] = y0;
  r[1] = y0 + y1 + y2 + y3;
  r[2] = y0 - y1 + y2 - y3;
  r[3] = y0 + 2 * y1 + 4 * y2 + 8 * y3;
  r[4] = y0 - 2 * y1 + 4 * y2 - 8 * y3;
  r[5] = y3;
}
// G^T u (adjoint of G): 6 -> 3
inline void gt3(const float* u, float* g) {
  constexpr float k4 = 1.f / 4, k6 = 1.f / 6, k12 = 1.f / 12, k24 = 1.f / 24;
  g[0] = u[0] * k4 - (u[1] + u[2]) * k6 + (u[3] + u[4]) * k24;
  g[1] = (u[2] - u[1]) * k6 + (u[3] - u[4]) * k12;
  g[2] = (u[3] + u[4] - u[1] - u[2]) * k6 + u[5];
}

// The 36 planes are written a few floats at a time each; a power-of-two distance between them
// would map every plane to the same cache sets, so pad it to an odd number of cache lines.
int64_t planeStride(int64_t n) { return ((n + 15) / 16 | 1) * 16; }

// Scratch buffers reused across calls: a fresh buffer of tens of MB comes from mmap and costs more
// in page faults than the transform itself. Each public entry point leases a workspace for its
// duration; leases come from a shared pool rather than per thread, because libuv runs successive
// calls on any of its threads, and concurrent calls (two models) get different workspaces.
struct Workspace {
  torch::Tensor buf[5];  // one per slot: buffers alive at the same time
};
std::mutex poolMu;
std::vector<std::unique_ptr<Workspace>> pool;
thread_local Workspace* current = nullptr;

class Lease {
 public:
  Lease() {
    if (current) return;  // nested entry point: keep the outer lease
    std::lock_guard<std::mutex> lock(poolMu);
    if (pool.empty()) {
      ws_ = std::make_unique<Workspace>();
    } else {
      ws_ = std::move(pool.back());
      pool.pop_back();
    }
    current = ws_.get();
  }
  ~Lease() {
    if (!ws_) return;
    current = nullptr;
    std::lock_guard<std::mutex> lock(poolMu);
    pool.push_back(std::move(ws_));
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

 private:
  std::unique_ptr<Workspace> ws_;
};

// [36, rows, cols] in the buffer `b`, which is (re)allocated when too small.
torch::Tensor planesIn(torch::Tensor& b, int64_t rows, int64_t cols, const torch::TensorOptions& o) {
  const int64_t stride = planeStride(rows * cols), need = kXi * stride;
  if (!b.defined() || b.numel() < need || b.dtype() != o.dtype()) {
    c10::InferenceMode normal(false);  // a normal tensor: written in place whatever mode a later call is in
    b = torch::Tensor();               // free the old one first
    b = torch::empty({need}, o);
  }
  return b.as_strided({kXi, rows, cols}, {stride, cols, 1});
}

// [36, rows, cols] in the leased workspace; nothing returned from this file points into one.
torch::Tensor scratchPlanes(int slot, int64_t rows, int64_t cols, const torch::TensorOptions& o) {
  TORCH_CHECK(current, "winograd: scratch used outside a lease");
  return planesIn(current->buf[slot], rows, cols, o);
}

// [36, rows, cols] in `*keep` if given (see planesIn), else in a fresh buffer.
torch::Tensor keptPlanes(int64_t rows, int64_t cols, const torch::TensorOptions& o, torch::Tensor* keep) {
  if (keep) return planesIn(*keep, rows, cols, o);
  const int64_t stride = planeStride(rows * cols);
  return torch::empty({kXi * stride}, o).as_strided({kXi, rows, cols}, {stride, cols, 1});
}

void checkInput(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.dim() == 4 && t.scalar_type() == torch::kFloat && t.device().is_cpu(), "winograd: ", what,
              " must be a 4-d float CPU tensor");
  TORCH_CHECK(t.size(2) % 4 == 0 && t.size(3) % 4 == 0, "winograd: ", what, " height and width must be multiples of 4");
}

// x [N, C, H, W] -> V [36, C, T]: B^T d B per 6x6 tile (zero padding of 1 around the image)
// slot >= 0: into that scratch slot; else into *keep (see keptPlanes)
torch::Tensor inputTransform(const torch::Tensor& xIn, int slot, torch::Tensor* keep = nullptr) {
  RECORD_FUNCTION("winograd::inputTransform", std::vector<c10::IValue>());
  auto x = xIn.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t th = H / 4, tw = W / 4, T = N * th * tw, plane = planeStride(C * T), Wp = W + 2;
  auto V = slot >= 0 ? scratchPlanes(slot, C, T, x.options()) : keptPlanes(C, T, x.options(), keep);
  const float* xp = x.data_ptr<float>();
  float* vp = V.data_ptr<float>();
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> zero(W, 0.f), col(6 * Wp, 0.f);
    for (int64_t cn = begin; cn < end; ++cn) {
      const int64_t c = cn / N, n = cn % N;
      const float* img = xp + (n * C + c) * H * W;
      for (int64_t ty = 0; ty < th; ++ty) {
        const float* r[6];
        for (int k = 0; k < 6; ++k) {
          int64_t row = 4 * ty - 1 + k;
          r[k] = row >= 0 && row < H ? img + row * W : zero.data();
        }
        // columns first (B^T d), vectorised along the row; col has a zero at both ends (padding)
        float* c0 = col.data() + 1;
        for (int64_t j = 0; j < W; ++j) {
          float o[6];
          bt6(r[0][j], r[1][j], r[2][j], r[3][j], r[4][j], r[5][j], o);
          for (int i = 0; i < 6; ++i) c0[i * Wp + j] = o[i];
        }
        float* dst = vp + c * T + (n * th + ty) * tw;
        for (int64_t tx = 0; tx < tw; ++tx) {
          for (int i = 0; i < 6; ++i) {
            const float* d = col.data() + i * Wp + 4 * tx;
            float o[6];
            bt6(d[0], d[1], d[2], d[3], d[4], d[5], o);
            for (int j = 0; j < 6; ++j) dst[(i * 6 + j) * plane + tx] = o[j];
          }
        }
      }
    }
  });
  return V;
}

// gy [N, C, H, W] -> dM [36, C, T]: A dy A^T per 4x4 tile (adjoint of the output transform)
torch::Tensor gradTransform(const torch::Tensor& gIn) {
  RECORD_FUNCTION("winograd::gradTransform", std::vector<c10::IValue>());
  auto g = gIn.contiguous();
  const int64_t N = g.size(0), C = g.size(1), H = g.size(2), W = g.size(3);
  const int64_t th = H / 4, tw = W / 4, T = N * th * tw, plane = planeStride(C * T);
  auto M = scratchPlanes(2, C, T, g.options());
  const float* gp = g.data_ptr<float>();
  float* mp = M.data_ptr<float>();
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> col(6 * W);
    for (int64_t cn = begin; cn < end; ++cn) {
      const int64_t c = cn / N, n = cn % N;
      const float* img = gp + (n * C + c) * H * W;
      for (int64_t ty = 0; ty < th; ++ty) {
        const float* r0 = img + 4 * ty * W;
        for (int64_t j = 0; j < W; ++j) {
          float o[6];
          a6(r0[j], r0[W + j], r0[2 * W + j], r0[3 * W + j], o);
          for (int i = 0; i < 6; ++i) col[i * W + j] = o[i];
        }
        float* dst = mp + c * T + (n * th + ty) * tw;
        for (int64_t tx = 0; tx < tw; ++tx) {
          for (int i = 0; i < 6; ++i) {
            const float* d = col.data() + i * W + 4 * tx;
            float o[6];
            a6(d[0], d[1], d[2], d[3], o);
            for (int j = 0; j < 6; ++j) dst[(i * 6 + j) * plane + tx] = o[j];
          }
        }
      }
    }
  });
  return M;
}

// out[xi] = a[xi] b[xi] for the 36 points; one single-threaded GEMM per point, points in parallel.
void pointwiseGemm(const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& out) {
  RECORD_FUNCTION("winograd::gemm", std::vector<c10::IValue>());
  const bool inference = c10::InferenceMode::is_enabled();  // thread-local: carry it to the workers
  at::parallel_for(0, kXi, 1, [&](int64_t begin, int64_t end) {
    c10::InferenceMode mode(inference);
    torch::NoGradGuard noGrad;  // nor do workers inherit the caller's autograd state: keep out= ops legal
    for (int64_t xi = begin; xi < end; ++xi) {
      auto o = out[xi];
      gemm::serial(a[xi], b[xi], o);
    }
  });
}

}  // namespace

bool eligible(const torch::Tensor& x, const torch::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
              at::IntArrayRef dilation, int64_t groups) {
  auto all = [](at::IntArrayRef v, int64_t k) {
    for (auto e : v)
      if (e != k) return false;
    return v.size() == 2;
  };
  return x.dim() == 4 && w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3 && groups == 1 && all(stride, 1) &&
         all(padding, 1) && all(dilation, 1) && x.size(2) % 4 == 0 && x.size(3) % 4 == 0 && x.size(2) > 0 &&
         x.size(3) > 0 && x.scalar_type() == torch::kFloat && x.device().is_cpu();
}

bool preferred(const torch::Tensor& x, const torch::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
               at::IntArrayRef dilation, int64_t groups, bool vsBlocked) {
  // Measured on a 2-core AVX2 machine against oneDNN's direct convolution (VGG16 shapes, batch 64):
  // few input channels always lose; large images (32x32) win against the plain NCHW path, whose
  // layout reorders are avoided, but not against prepacked blocked oneDNN, since the transforms
  // are memory-bound there.
  return eligible(x, w, stride, padding, dilation, groups) && x.size(1) >= 32 &&
         (!vsBlocked || x.size(2) * x.size(3) <= 256);
}

namespace {
void transformWeightInto(const torch::Tensor& wIn, torch::Tensor& U) {
  RECORD_FUNCTION("winograd::weightTransform", std::vector<c10::IValue>());
  auto w = wIn.detach().to(torch::kFloat).contiguous();
  const int64_t Co = w.size(0), Ci = w.size(1);
  TORCH_CHECK(U.size(0) == kXi && U.size(1) == Co && U.size(2) == Ci && U.stride(1) == Ci && U.stride(2) == 1,
              "winograd: bad U buffer");
  const int64_t plane = U.stride(0);
  const float* wp = w.data_ptr<float>();
  float* up = U.data_ptr<float>();
  constexpr int64_t kChunk = 64;  // kernels per chunk: each of the 36 planes gets 256 contiguous bytes
  const int64_t K = Co * Ci;
  at::parallel_for(0, (K + kChunk - 1) / kChunk, 16, [&](int64_t begin, int64_t end) {
    // kernels innermost throughout, so the arithmetic vectorises across kChunk kernels
    float g[9][kChunk], t[6][3][kChunk], buf[kXi][kChunk];
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t k0 = ch * kChunk, n = std::min(kChunk, K - k0);
      for (int64_t q = 0; q < kChunk; ++q) {
        if (q >= n) {
          for (int e = 0; e < 9; ++e) g[e][q] = 0.f;
        } else {
          const float* src = wp + (k0 + q) * 9;
          for (int e = 0; e < 9; ++e) g[e][q] = src[e];
        }
      }
      constexpr float k4 = 1.f / 4, k6 = 1.f / 6, k12 = 1.f / 12, k24 = 1.f / 24;
      for (int j = 0; j < 3; ++j)  // G g: over kernel rows, per column j
        for (int64_t q = 0; q < kChunk; ++q) {
          const float a = g[j][q], b = g[3 + j][q], c = g[6 + j][q];
          t[0][j][q] = a * k4;
          t[1][j][q] = -(a + b + c) * k6;
          t[2][j][q] = -(a - b + c) * k6;
          t[3][j][q] = a * k24 + b * k12 + c * k6;
          t[4][j][q] = a * k24 - b * k12 + c * k6;
          t[5][j][q] = c;
        }
      for (int i = 0; i < 6; ++i)  // (G g) G^T: over columns, per row i
        for (int64_t q = 0; q < kChunk; ++q) {
          const float a = t[i][0][q], b = t[i][1][q], c = t[i][2][q];
          buf[i * 6 + 0][q] = a * k4;
          buf[i * 6 + 1][q] = -(a + b + c) * k6;
          buf[i * 6 + 2][q] = -(a - b + c) * k6;
          buf[i * 6 + 3][q] = a * k24 + b * k12 + c * k6;
          buf[i * 6 + 4][q] = a * k24 - b * k12 + c * k6;
          buf[i * 6 + 5][q] = c;
        }
      for (int64_t xi = 0; xi < kXi; ++xi) std::copy(buf[xi], buf[xi] + n, up + xi * plane + k0);
    }
  });
}
}  // namespace

torch::Tensor transformWeight(const torch::Tensor& w) {
  TORCH_CHECK(w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3, "winograd: weight must be [Cout, Cin, 3, 3]");
  auto U = torch::empty({kXi, w.size(0), w.size(1)}, w.options().dtype(torch::kFloat));
  transformWeightInto(w, U);
  return U;
}

namespace {
// The GEMMs and output transform of forward, from transformed input tiles V [36, Ci, T].
torch::Tensor forwardFromTiles(const torch::Tensor& V, const torch::Tensor& U, const torch::Tensor& bias,
                               int64_t N, int64_t H, int64_t W) {
  const int64_t Ci = V.size(1), Co = U.size(1);
  TORCH_CHECK(U.dim() == 3 && U.size(0) == kXi && U.size(2) == Ci, "winograd: transformed weight does not match input");
  TORCH_CHECK(U.stride(1) == Ci && U.stride(2) == 1, "winograd: transformed weight rows must be contiguous");
  const int64_t th = H / 4, tw = W / 4, T = N * th * tw, plane = planeStride(Co * T);
  auto M = scratchPlanes(1, Co, T, V.options());
  pointwiseGemm(U, V, M);  // planes may be padded apart (scratch buffers): no copy needed
  auto y = torch::empty({N, Co, H, W}, V.options());
  RECORD_FUNCTION("winograd::outputTransform", std::vector<c10::IValue>());
  auto b = bias.defined() ? bias.contiguous() : torch::Tensor();
  const float* mp = M.data_ptr<float>();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N * Co, 1, [&](int64_t begin, int64_t end) {
    for (int64_t cn = begin; cn < end; ++cn) {
      const int64_t co = cn / N, n = cn % N;
      const float b0 = bp ? bp[co] : 0.f;
      float* out = yp + (n * Co + co) * H * W;
      for (int64_t ty = 0; ty < th; ++ty) {
        const float* src = mp + co * T + (n * th + ty) * tw;
        for (int64_t tx = 0; tx < tw; ++tx) {
          float t[4][6];
          for (int j = 0; j < 6; ++j) {  // A^T m over rows i, column j
            float o[4];
            at4(src + j * plane + tx, 6 * plane, o);
            for (int r = 0; r < 4; ++r) t[r][j] = o[r];
          }
          for (int r = 0; r < 4; ++r) {
            float o[4];
            at4(t[r], 1, o);
            float* dst = out + (4 * ty + r) * W + 4 * tx;
            for (int c = 0; c < 4; ++c) {
              float v = o[c] + b0;
              dst[c] = v;
            }
          }
        }
      }
    }
  });
  return y;
}
}  // namespace

torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& U, const torch::Tensor& bias) {
  checkInput(x, "input");
  Lease lease;
  return forwardFromTiles(inputTransform(x, 0), U, bias, x.size(0), x.size(2), x.size(3));
}

namespace {
// d loss / d w from the forward's transformed input tiles V [36, Ci, T] and dM [36, Co, T]
torch::Tensor weightGradFromTiles(const torch::Tensor& V, const torch::Tensor& dM) {
  const int64_t Ci = V.size(1), Co = dM.size(1);
  TORCH_CHECK(V.size(2) == dM.size(2), "winograd: output gradient does not match input");
  auto dU = scratchPlanes(4, Co, Ci, dM.options());
  pointwiseGemm(dM, V.transpose(1, 2), dU);  // dU[xi] = dM[xi] V[xi]^T, summed over tiles
  auto dW = torch::empty({Co, Ci, 3, 3}, dM.options());
  RECORD_FUNCTION("winograd::weightGradTransform", std::vector<c10::IValue>());
  const float* up = dU.data_ptr<float>();
  float* wp = dW.data_ptr<float>();
  constexpr int64_t kChunk = 64;
  const int64_t K = Co * Ci, plane = dU.stride(0);
  at::parallel_for(0, (K + kChunk - 1) / kChunk, 16, [&](int64_t begin, int64_t end) {
    float buf[kXi][kChunk];
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t k0 = ch * kChunk, n = std::min(kChunk, K - k0);
      for (int64_t xi = 0; xi < kXi; ++xi) std::copy(up + xi * plane + k0, up + xi * plane + k0 + n, buf[xi]);
      for (int64_t q = 0; q < n; ++q) {
        float t[3][6], u[6], g[3];
        for (int j = 0; j < 6; ++j) {  // G^T over rows i
          for (int i = 0; i < 6; ++i) u[i] = buf[i * 6 + j][q];
          gt3(u, g);
          for (int r = 0; r < 3; ++r) t[r][j] = g[r];
        }
        for (int r = 0; r < 3; ++r) gt3(t[r], wp + (k0 + q) * 9 + r * 3);
      }
    }
  });
  return dW;
}

// d loss / d x [N, Ci, H, W] from dM [36, Co, T] and the forward's U [36, Co, Ci]: the adjoint of
// the forward, dV[xi] = U[xi]^T dM[xi], then B dV B^T per tile, overlapping tiles summed.
torch::Tensor inputGradFromTiles(const torch::Tensor& dM, const torch::Tensor& U, int64_t N, int64_t H, int64_t W) {
  const int64_t Ci = U.size(2), th = H / 4, tw = W / 4, T = N * th * tw;
  TORCH_CHECK(dM.size(2) == T && U.size(1) == dM.size(1), "winograd: output gradient does not match weight");
  auto dV = scratchPlanes(1, Ci, T, dM.options());
  pointwiseGemm(U.transpose(1, 2), dM, dV);
  auto gx = torch::empty({N, Ci, H, W}, dM.options());
  RECORD_FUNCTION("winograd::inputGradTransform", std::vector<c10::IValue>());
  const int64_t plane = dV.stride(0), Hp = H + 2, Wp = W + 2;
  const float* vp = dV.data_ptr<float>();
  float* gp = gx.data_ptr<float>();
  at::parallel_for(0, N * Ci, 1, [&](int64_t begin, int64_t end) {
    // the plane with its padding border, and the 6 rows of one tile row after B along columns
    std::vector<float> pad(Hp * Wp), rows(6 * Wp);
    for (int64_t cn = begin; cn < end; ++cn) {
      const int64_t c = cn / N, n = cn % N;
      std::fill(pad.begin(), pad.end(), 0.f);
      for (int64_t ty = 0; ty < th; ++ty) {
        std::fill(rows.begin(), rows.end(), 0.f);
        const float* src = vp + c * T + (n * th + ty) * tw;
        for (int64_t tx = 0; tx < tw; ++tx)
          for (int i = 0; i < 6; ++i) {  // B over the columns j of row i, added at the tile's columns
            const float* d = src + i * 6 * plane + tx;
            float o[6];
            b6(d[0], d[plane], d[2 * plane], d[3 * plane], d[4 * plane], d[5 * plane], o);
            float* r = rows.data() + i * Wp + 4 * tx;
            for (int j = 0; j < 6; ++j) r[j] += o[j];
          }
        // B over the rows, vectorised along them, added at the tile row's 6 padded rows
        float* dst = pad.data() + 4 * ty * Wp;
        const float* r = rows.data();
        for (int64_t j = 0; j < Wp; ++j) {
          float o[6];
          b6(r[j], r[Wp + j], r[2 * Wp + j], r[3 * Wp + j], r[4 * Wp + j], r[5 * Wp + j], o);
          for (int k = 0; k < 6; ++k) dst[k * Wp + j] += o[k];
        }
      }
      float* out = gp + (n * Ci + c) * H * W;
      for (int64_t y = 0; y < H; ++y) std::copy_n(pad.data() + (y + 1) * Wp + 1, W, out + y * W);
    }
  });
  return gx;
}
}  // namespace

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// U for one call, in a reused buffer (training transforms every weight on every step)
torch::Tensor scratchWeight(const torch::Tensor& w) {
  TORCH_CHECK(w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3, "winograd: weight must be [Cout, Cin, 3, 3]");
  auto U = scratchPlanes(3, w.size(0), w.size(1), w.options().dtype(torch::kFloat));
  transformWeightInto(w, U);
  return U;
}

struct Conv3x3Fn : public torch::autograd::Function<Conv3x3Fn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& b, TrainStore* store) {
    checkInput(x, "input");
    Lease lease;
    torch::Tensor U;
    if (store) {
      auto& u = store->U;
      if (!u.defined() || u.size(1) != w.size(0) || u.size(2) != w.size(1)) {
        c10::InferenceMode normal(false);  // written in place on later calls
        u = torch::empty({kXi, w.size(0), w.size(1)}, w.options().dtype(torch::kFloat));
      }
      transformWeightInto(w, u);
      U = u;
    } else {
      U = scratchWeight(w);
    }
    // the transformed input tiles are kept for the weight gradient (2.25x the input's size) instead of
    // transforming x again in backward
    const bool keepTiles = w.requires_grad();
    auto V = inputTransform(x, keepTiles ? -1 : 0, store ? &store->V : nullptr);
    // kept as plain data, not saved variables: the store's buffers are rewritten by the next call,
    // after this graph is gone
    if (keepTiles) ctx->saved_data["V"] = V;
    if (store) ctx->saved_data["U"] = U;
    ctx->save_for_backward({w});
    ctx->saved_data["bias"] = b.numel() > 0;
    return forwardFromTiles(V, U, b.numel() > 0 ? b : torch::Tensor(), x.size(0), x.size(2), x.size(3));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Lease lease;
    auto saved = ctx->get_saved_variables();
    const auto& w = saved[0];
    auto gy = grads[0].contiguous();
    checkInput(gy, "output gradient");
    torch::Tensor gx, gw, gb;
    const bool needX = ctx->needs_input_grad(0), needW = ctx->needs_input_grad(1);
    // both gradients start from the output gradient's tiles dM = A gy A^T
    auto dM = needX || needW ? gradTransform(gy) : torch::Tensor();
    if (needW) gw = weightGradFromTiles(ctx->saved_data["V"].toTensor(), dM);
    if (needX) {
      auto U = ctx->saved_data.count("U") ? ctx->saved_data["U"].toTensor() : scratchWeight(w);
      gx = inputGradFromTiles(dM, U, gy.size(0), gy.size(2), gy.size(3));
    }
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) gb = gy.sum({0, 2, 3});
    return {gx, gw, gb, torch::Tensor()};
  }
};
}  // namespace

torch::Tensor conv3x3(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, TrainStore* store) {
  // apply() takes no undefined tensors: an empty one stands for "no bias"
  return Conv3x3Fn::apply(x, w, b.defined() ? b : torch::empty({0}, w.options()), store);
}

}  // namespace cmi::winograd
