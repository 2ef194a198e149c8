// Batched dense linear algebra for the CMI estimators: Gaussian kernels of per-filter maps and
// Renyi entropies of (Hadamard products of) Gram matrices, float64 throughout. Eigenvalues come
// from LAPACK (dsytrd + dsterf: eigenvalues only), resolved from the liblapack libtorch links.
// Work runs off the JS thread on our own worker threads, each calling single-threaded LAPACK.
#include "linalg.h"

#include <dlfcn.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

// LAPACK/OpenBLAS entry points, looked up at run time in the system liblapack.so.3 (the one libtorch
// uses) so the addon needs no link-time LAPACK; OpenBLAS thread control is optional.
using DsytrdFn = void (*)(const char*, const int*, double*, const int*, double*, double*, double*, double*,
                          const int*, int*);
using DsterfFn = void (*)(const int*, double*, double*, int*);
using Dsytd2Fn = void (*)(const char*, const int*, double*, const int*, double*, double*, double*, int*);
using DlatrdFn = void (*)(const char*, const int*, const int*, double*, const int*, double*, double*, double*,
                          const int*);
using Dsyr2kFn = void (*)(const char*, const char*, const int*, const int*, const double*, const double*,
                          const int*, const double*, const int*, const double*, double*, const int*);
struct Lapack {
  DsytrdFn dsytrd = nullptr;
  DsterfFn dsterf = nullptr;
  Dsytd2Fn dsytd2 = nullptr;
  DlatrdFn dlatrd = nullptr;
  Dsyr2kFn dsyr2k = nullptr;
  int (*getThreads)() = nullptr;
  void (*setThreads)(int) = nullptr;
};

const Lapack& lapack() {
  static const Lapack lib = [] {
    Lapack l;
    for (const char* name : {"liblapack.so.3", "libopenblas.so.0", "libopenblas.so"}) {
      void* h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (!h) continue;
      if (!l.dsytrd) l.dsytrd = reinterpret_cast<DsytrdFn>(dlsym(h, "dsytrd_"));
      if (!l.dsterf) l.dsterf = reinterpret_cast<DsterfFn>(dlsym(h, "dsterf_"));
      if (!l.dsytd2) l.dsytd2 = reinterpret_cast<Dsytd2Fn>(dlsym(h, "dsytd2_"));
      if (!l.dlatrd) l.dlatrd = reinterpret_cast<DlatrdFn>(dlsym(h, "dlatrd_"));
      if (!l.dsyr2k) l.dsyr2k = reinterpret_cast<Dsyr2kFn>(dlsym(h, "dsyr2k_"));
      if (!l.getThreads) l.getThreads = reinterpret_cast<int (*)()>(dlsym(h, "openblas_get_num_threads"));
      if (!l.setThreads) l.setThreads = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"));
    }
    return l;
  }();
  if (!lib.dsytrd || !lib.dsterf) throw std::runtime_error("LAPACK (liblapack.so.3) not found: dsytrd_/dsterf_ missing");
  return lib;
}

void dsytrd_(const char* uplo, const int* n, double* a, const int* lda, double* d, double* e, double* tau,
             double* work, const int* lwork, int* info) {
  lapack().dsytrd(uplo, n, a, lda, d, e, tau, work, lwork, info);
}
void dsterf_(const int* n, double* d, double* e, int* info) { lapack().dsterf(n, d, e, info); }

// dsytrd('L') with our own block size: LAPACK's default (NB 32, unblocked below 128 columns) is
// measured ~10% slower than NB 16 / crossover 32 for N = 256. Same Householder algorithm and
// blocking scheme (dlatrd panel + dsyr2k update + dsytd2 tail) as LAPACK's dsytrd.
void tridiagonalLower(int n, double* a, double* d, double* e, double* tau, double* work, int lwork) {
  const Lapack& l = lapack();
  constexpr int nb = 16, nx = 32;
  int info = 0;
  if (!l.dlatrd || !l.dsyr2k || !l.dsytd2 || n <= nx || lwork < n * nb) {
    l.dsytrd("L", &n, a, &n, d, e, tau, work, &lwork, &info);
  } else {
    int i = 0;
    const size_t lda = size_t(n);
    const double mone = -1, one = 1;
    for (; i < n - nx; i += nb) {
      int m = n - i, bsz = nb, m2 = n - i - nb;
      l.dlatrd("L", &m, &bsz, &a[i + i * lda], &n, &e[i], &tau[i], work, &n);
      l.dsyr2k("L", "N", &m2, &bsz, &mone, &a[(i + nb) + i * lda], &n, &work[nb], &n, &one,
               &a[(i + nb) + (i + nb) * lda], &n);
      for (int j = i; j < i + nb; ++j) {
        a[(j + 1) + j * lda] = e[j];
        d[j] = a[j + j * lda];
      }
    }
    int m = n - i;
    l.dsytd2("L", &m, &a[i + i * lda], &n, &d[i], &e[i], &tau[i], &info);
  }
  if (info != 0) throw std::runtime_error("tridiagonal reduction failed (info " + std::to_string(info) + ")");
}

[[noreturn]] void fail(Napi::Env env, const std::string& msg) { throw Napi::Error::New(env, msg); }

// Per-thread scratch for N x N symmetric eigenvalue problems.
struct Workspace {
  int n = 0;
  std::vector<double> a, a2, d, e, tau, work, ones;
  std::vector<double> lanes, laneD, laneE, laneWork;  // tridiagonal4 scratch, sized on first use
  std::vector<double> joints;                         // log mode: up to 4 packed joint kernels, sized on first use
  explicit Workspace(int n_) : n(n_), a(size_t(n_) * n_), a2(size_t(n_) * n_), d(n_), e(n_), tau(n_) {
    int lwork = -1, info = 0;
    double q = 0;
    dsytrd_("L", &n, a.data(), &n, d.data(), e.data(), tau.data(), &q, &lwork, &info);
    work.resize(std::max<size_t>(size_t(q), size_t(n) * 16));
  }
};

// Neumaier's compensated sum (Kahan's, also exact when a term outweighs the running sum).
struct CompensatedSum {
  double sum = 0, comp = 0;
  void add(double x) {
    const double t = sum + x;
    comp += std::fabs(sum) >= std::fabs(x) ? (sum - t) + x : (x - t) + sum;
    sum = t;
  }
  double value() const { return sum + comp; }
};

// S_alpha(M / tr) = log(sum_i |x_i|^alpha) / (1 - alpha), x_i = lambda_i / tr, from the eigenvalues
// lambda_i of M and tr = tr(M) (|x|: round-off makes tiny negatives). Near saturation every x_i is
// close to 1/N and sum |x|^alpha is close to 1, so the 1/(1 - alpha) = -100 of alpha = 1.01 turns
// an absolute error of the sum into 100x that error of the entropy; two errors of that size were
// measured to dominate (~5e-14 at N = 56, alpha = 1.01):
//  - rounding the ~N terms x^alpha ~ 1/N into a sum ~ 1 (each addition rounds at ulp(1)), and
//  - the computed eigenvalues' sum drifting from tr(M) by a few ulp (reduction and QL round-off;
//    the 4-lane path's rational QL drifts ~2x more than dsterf), which enters sum x^alpha with
//    weight ~alpha x^(alpha-1) ~ 1 and so moves the entropy by ~100 x the drift.
// Both go away with the exact identity sum_i x_i = tr(M)/tr = 1 (signed x: the trace):
//   sum_i |x_i|^alpha = 1 + sum_i (|x_i|^alpha - x_i),  |x|^alpha - |x| = |x| expm1((alpha-1) ln|x|),
// each term computed to a few ulp of itself (no cancellation), summed with compensation, and the
// entropy finished as log1p(S - 1) / (1 - alpha) from S - 1 directly. The trace drift then enters
// only with weight alpha x^(alpha-1) - 1 ~ 0.03 instead of ~1.
// That form is for S >= 1/2 (alpha near 1, and any alpha < 1): for large alpha S is small (~N^(1-alpha)
// near saturation), S - 1 ~ -1 and log1p would cancel, so there S itself is summed (compensated).
double renyiFromEigenvalues(const double* lambda, int n, double tr, double alpha) {
  const double am1 = alpha - 1.0;
  CompensatedSum sm1;  // S - 1
  for (int i = 0; i < n; ++i) {
    const double x = lambda[i] / tr, ax = std::fabs(x);
    double t = ax > 0 ? ax * std::expm1(am1 * std::log(ax)) : 0.0;  // |x|^alpha - |x|
    if (x < 0) t += 2 * ax;                                          // |x|^alpha - x
    sm1.add(t);
  }
  if (sm1.value() >= -0.5) return std::log1p(sm1.value()) / (1.0 - alpha);
  CompensatedSum s;  // S
  for (int i = 0; i < n; ++i) s.add(std::pow(std::fabs(lambda[i] / tr), alpha));
  return std::log(s.value()) / (1.0 - alpha);
}

// S_alpha(K / tr K), natural log, for the symmetric K whose upper triangle (row-major; LAPACK's
// column-major lower triangle) is in `a`; `a` is destroyed. Eigenvalues only: dsytrd + dsterf.
double entropyUpper(double* a, Workspace& ws, double alpha) {
  const int n = ws.n;
  CompensatedSum tr;
  for (int i = 0; i < n; ++i) tr.add(a[size_t(i) * n + i]);
  int info = 0;
  tridiagonalLower(n, a, ws.d.data(), ws.e.data(), ws.tau.data(), ws.work.data(), int(ws.work.size()));
  dsterf_(&n, ws.d.data(), ws.e.data(), &info);
  if (info != 0) throw std::runtime_error("dsterf did not converge (info " + std::to_string(info) + ")");
  return renyiFromEigenvalues(ws.d.data(), n, tr.value(), alpha);
}

// Per-filter kernels are packed upper triangles, row by row: entry (i, j), j >= i, of an N x N
// symmetric matrix at packedRow(i, n) + (j - i). Half the memory, and contiguous streams.
inline size_t packedRow(int i, int n) { return size_t(i) * n - size_t(i) * (i - 1) / 2; }
inline size_t packedSize(int n) { return size_t(n) * (n + 1) / 2; }

// Packs the upper triangle of a full symmetric matrix.
void pack(const double* full, int n, double* out) {
  size_t p = 0;
  for (int i = 0; i < n; ++i)
    for (int j = i; j < n; ++j) out[p++] = full[size_t(i) * n + j];
}

// v4d helpers are always inlined into the AVX2/default clones below, so the ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef double v4d __attribute__((vector_size(32)));
__attribute__((always_inline)) inline v4d load4(const double* p) {
  v4d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline double hsum(v4d v) { return (v[0] + v[1]) + (v[2] + v[3]); }

// sum_p (x[p] * k[p])^2 over a packed triangle (x null = ones).
template <bool HasX>
__attribute__((always_inline)) inline double packedSquares(const double* x, const double* k, size_t len) {
  v4d a0 = {0, 0, 0, 0}, a1 = {0, 0, 0, 0};
  size_t p = 0;
  for (; p + 8 <= len; p += 8) {
    const v4d k0 = load4(k + p), k1 = load4(k + p + 4);
    const v4d v0 = HasX ? load4(x + p) * k0 : k0;
    const v4d v1 = HasX ? load4(x + p + 4) * k1 : k1;
    a0 += v0 * v0;
    a1 += v1 * v1;
  }
  double tail = 0;
  for (; p < len; ++p) {
    const double v = HasX ? x[p] * k[p] : k[p];
    tail += v * v;
  }
  return hsum(a0 + a1) + tail;
}

// alpha = 2: sum lambda^2 = tr(A^2) = sum_ij A_ij^2, so S_2(K / tr K) = -log(sum_ij K_ij^2 / tr(K)^2)
// with no eigendecomposition. For packed M = x o k: sum_ij = 2 * sum_packed - sum_diag. Cloned for
// AVX2; same operations in the same order either way.
__attribute__((target_clones("avx2", "default"))) double entropy2Packed(const double* x, const double* k, int n) {
  const size_t len = packedSize(n);
  const double all = x ? packedSquares<true>(x, k, len) : packedSquares<false>(x, k, len);
  double diag = 0, tr = 0;
  for (int i = 0; i < n; ++i) {
    const size_t p = packedRow(i, n);
    const double m = x ? x[p] * k[p] : k[p];
    diag += m * m;
    tr += m;
  }
  return -std::log((2 * all - diag) / (tr * tr));
}

// The pair S_2(x o k) and S_2(y o k) in one pass over k (k is the memory-bound stream).
__attribute__((target_clones("avx2", "default"))) void entropy2PackedPair(const double* x, const double* y,
                                                                            const double* k, int n, double out[2]) {
  const size_t len = packedSize(n);
  v4d a0 = {0, 0, 0, 0}, a1 = {0, 0, 0, 0}, b0 = {0, 0, 0, 0}, b1 = {0, 0, 0, 0};
  size_t p = 0;
  for (; p + 8 <= len; p += 8) {
    const v4d k0 = load4(k + p), k1 = load4(k + p + 4);
    const v4d v0 = load4(x + p) * k0, v1 = load4(x + p + 4) * k1;
    const v4d u0 = load4(y + p) * k0, u1 = load4(y + p + 4) * k1;
    a0 += v0 * v0;
    a1 += v1 * v1;
    b0 += u0 * u0;
    b1 += u1 * u1;
  }
  double ta = 0, tb = 0;
  for (; p < len; ++p) {
    const double v = x[p] * k[p], u = y[p] * k[p];
    ta += v * v;
    tb += u * u;
  }
  const double allX = hsum(a0 + a1) + ta, allY = hsum(b0 + b1) + tb;
  double diagX = 0, trX = 0, diagY = 0, trY = 0;
  for (int i = 0; i < n; ++i) {
    const size_t q = packedRow(i, n);
    const double m = x[q] * k[q], my = y[q] * k[q];
    diagX += m * m;
    trX += m;
    diagY += my * my;
    trY += my;
  }
  out[0] = -std::log((2 * allX - diagX) / (trX * trX));
  out[1] = -std::log((2 * allY - diagY) / (trY * trY));
}

// Upper triangles (row-major) of M = b o k into a and of by o k into a2, k packed (b null = ones;
// a2 null = skip; by is non-null whenever a2 is).
__attribute__((target_clones("avx2", "default"))) void fillUpper(const double* b, const double* by, const double* k,
                                                                   int n, double* a, double* a2) {
  for (int i = 0; i < n; ++i) {
    const size_t r = size_t(i) * n;
    const double* kr = k + packedRow(i, n) - i;  // kr[j] = k(i, j)
    for (int j = i; j < n; ++j) {
      a[r + j] = b ? b[r + j] * kr[j] : kr[j];
      if (a2) a2[r + j] = by[r + j] * kr[j];
    }
  }
}

// ---- four matrices at once ---------------------------------------------------------------------
// Householder tridiagonalisation (the algorithm of LAPACK's dsytd2, lower triangle) of 4 symmetric
// matrices, one per AVX2 lane, with the rank-2 update of step k-1 fused into the pass that forms
// A v for step k: one sweep over the trailing matrix per step. Storage: packed lower triangle,
// column-major (element (i, j), i >= j, at packedRow(j, n) + (i - j), the same index as our packed
// upper triangles), 4 lanes per element; the sweep takes two columns at a time so the vectors are
// loaded once for both. Measured ~1.5-1.8x faster per matrix than dsytrd at N = 256 on one core.
// a: [n(n+1)/2][4]; d: [n][4] diagonal; e: [n-1][4] off-diagonal; work: [4 n][4].
__attribute__((target("avx2,fma"))) void tridiagonal4(double* a, int n, double* d, double* e, double* work) {
  double* v = work;            // step k-1's Householder vector (indices k..n-1 valid)
  double* w = work + 4 * n;    // step k-1's w
  double* vN = work + 8 * n;   // step k's vector
  double* pN = work + 12 * n;  // step k's p / w
  bool pending = false;
  const __m256d zero = _mm256_setzero_pd(), half = _mm256_set1_pd(0.5), one = _mm256_set1_pd(1.0);
  const __m256d signmask = _mm256_set1_pd(-0.0);
  for (int k = 0; k < n - 1; ++k) {
    double* colk = a + 4 * packedRow(k, n);
    if (pending) {  // update column k with step k-1's (v, w): a(i,k) -= v_i w_k + w_i v_k
      const __m256d vk = _mm256_loadu_pd(v + 4 * k), wk = _mm256_loadu_pd(w + 4 * k);
      for (int i = k; i < n; ++i) {
        __m256d x = _mm256_loadu_pd(colk + 4 * (i - k));
        x = _mm256_fnmadd_pd(_mm256_loadu_pd(v + 4 * i), wk, x);
        x = _mm256_fnmadd_pd(_mm256_loadu_pd(w + 4 * i), vk, x);
        _mm256_storeu_pd(colk + 4 * (i - k), x);
      }
    }
    _mm256_storeu_pd(d + 4 * k, _mm256_loadu_pd(colk));
    // Householder reflector for x = a(k+1.., k): H x = beta e1, v(k+1) = 1
    const __m256d alpha = _mm256_loadu_pd(colk + 4);
    __m256d sigma2 = zero;
    for (int i = k + 2; i < n; ++i) {
      const __m256d x = _mm256_loadu_pd(colk + 4 * (i - k));
      sigma2 = _mm256_fmadd_pd(x, x, sigma2);
    }
    const __m256d live = _mm256_cmp_pd(sigma2, zero, _CMP_GT_OQ);  // lanes with something to reduce
    const __m256d norm = _mm256_sqrt_pd(_mm256_fmadd_pd(alpha, alpha, sigma2));
    // beta = -sign(alpha) * norm
    const __m256d betaLive = _mm256_xor_pd(_mm256_or_pd(norm, _mm256_and_pd(alpha, signmask)), signmask);
    const __m256d beta = _mm256_blendv_pd(alpha, betaLive, live);
    const __m256d tau = _mm256_blendv_pd(zero, _mm256_div_pd(_mm256_sub_pd(beta, alpha), beta), live);
    const __m256d scal = _mm256_blendv_pd(zero, _mm256_div_pd(one, _mm256_sub_pd(alpha, beta)), live);
    _mm256_storeu_pd(e + 4 * k, beta);
    _mm256_storeu_pd(vN + 4 * (k + 1), one);
    for (int i = k + 2; i < n; ++i) _mm256_storeu_pd(vN + 4 * i, _mm256_mul_pd(_mm256_loadu_pd(colk + 4 * (i - k)), scal));
    for (int i = k + 1; i < n; ++i) _mm256_storeu_pd(pN + 4 * i, zero);
    // one pass over A(k+1.., k+1..): apply step k-1's rank-2 update, accumulate pN = A vN
    int j = k + 1;
    if (pending) {
      // two columns per sweep: v_i, w_i, vN_i and pN_i are loaded once for both
      for (; j + 1 < n; j += 2) {
        double* c0 = a + 4 * packedRow(j, n);
        double* c1 = a + 4 * packedRow(j + 1, n);
        const __m256d vj0 = _mm256_loadu_pd(v + 4 * j), wj0 = _mm256_loadu_pd(w + 4 * j);
        const __m256d vj1 = _mm256_loadu_pd(v + 4 * (j + 1)), wj1 = _mm256_loadu_pd(w + 4 * (j + 1));
        const __m256d vN0 = _mm256_loadu_pd(vN + 4 * j), vN1 = _mm256_loadu_pd(vN + 4 * (j + 1));
        // diagonal (j,j), (j+1,j+1) and the element (j+1, j)
        __m256d a00 = _mm256_fnmadd_pd(_mm256_add_pd(vj0, vj0), wj0, _mm256_loadu_pd(c0));
        __m256d a11 = _mm256_fnmadd_pd(_mm256_add_pd(vj1, vj1), wj1, _mm256_loadu_pd(c1));
        __m256d a10 = _mm256_loadu_pd(c0 + 4);
        a10 = _mm256_fnmadd_pd(vj1, wj0, a10);
        a10 = _mm256_fnmadd_pd(wj1, vj0, a10);
        _mm256_storeu_pd(c0, a00);
        _mm256_storeu_pd(c1, a11);
        _mm256_storeu_pd(c0 + 4, a10);
        __m256d acc0 = _mm256_fmadd_pd(a10, vN1, zero);  // row j+1 of column j
        __m256d acc1 = zero;
        __m256d pj1 = _mm256_fmadd_pd(a10, vN0, _mm256_loadu_pd(pN + 4 * (j + 1)));
        for (int i = j + 2; i < n; ++i) {
          double* ap0 = c0 + 4 * (i - j);
          double* ap1 = c1 + 4 * (i - j - 1);
          const __m256d vi = _mm256_loadu_pd(v + 4 * i), wi = _mm256_loadu_pd(w + 4 * i);
          const __m256d vNi = _mm256_loadu_pd(vN + 4 * i);
          __m256d x0 = _mm256_loadu_pd(ap0), x1 = _mm256_loadu_pd(ap1);
          x0 = _mm256_fnmadd_pd(vi, wj0, x0);
          x0 = _mm256_fnmadd_pd(wi, vj0, x0);
          x1 = _mm256_fnmadd_pd(vi, wj1, x1);
          x1 = _mm256_fnmadd_pd(wi, vj1, x1);
          _mm256_storeu_pd(ap0, x0);
          _mm256_storeu_pd(ap1, x1);
          __m256d pi = _mm256_loadu_pd(pN + 4 * i);
          pi = _mm256_fmadd_pd(x0, vN0, pi);
          pi = _mm256_fmadd_pd(x1, vN1, pi);
          _mm256_storeu_pd(pN + 4 * i, pi);
          acc0 = _mm256_fmadd_pd(x0, vNi, acc0);
          acc1 = _mm256_fmadd_pd(x1, vNi, acc1);
        }
        _mm256_storeu_pd(pN + 4 * j, _mm256_add_pd(_mm256_loadu_pd(pN + 4 * j), _mm256_fmadd_pd(a00, vN0, acc0)));
        _mm256_storeu_pd(pN + 4 * (j + 1), _mm256_add_pd(pj1, _mm256_fmadd_pd(a11, vN1, acc1)));
      }
    }
    for (; j < n; ++j) {
      double* col = a + 4 * packedRow(j, n);
      const __m256d vNj = _mm256_loadu_pd(vN + 4 * j);
      __m256d ajj = _mm256_loadu_pd(col);
      __m256d acc = zero;
      if (pending) {
        const __m256d vj = _mm256_loadu_pd(v + 4 * j), wj = _mm256_loadu_pd(w + 4 * j);
        ajj = _mm256_fnmadd_pd(_mm256_add_pd(vj, vj), wj, ajj);
        _mm256_storeu_pd(col, ajj);
        for (int i = j + 1; i < n; ++i) {
          double* ap = col + 4 * (i - j);
          __m256d x = _mm256_loadu_pd(ap);
          x = _mm256_fnmadd_pd(_mm256_loadu_pd(v + 4 * i), wj, x);
          x = _mm256_fnmadd_pd(_mm256_loadu_pd(w + 4 * i), vj, x);
          _mm256_storeu_pd(ap, x);
          _mm256_storeu_pd(pN + 4 * i, _mm256_fmadd_pd(x, vNj, _mm256_loadu_pd(pN + 4 * i)));
          acc = _mm256_fmadd_pd(x, _mm256_loadu_pd(vN + 4 * i), acc);
        }
      } else {
        for (int i = j + 1; i < n; ++i) {
          const __m256d x = _mm256_loadu_pd(col + 4 * (i - j));
          _mm256_storeu_pd(pN + 4 * i, _mm256_fmadd_pd(x, vNj, _mm256_loadu_pd(pN + 4 * i)));
          acc = _mm256_fmadd_pd(x, _mm256_loadu_pd(vN + 4 * i), acc);
        }
      }
      _mm256_storeu_pd(pN + 4 * j, _mm256_add_pd(_mm256_loadu_pd(pN + 4 * j), _mm256_fmadd_pd(ajj, vNj, acc)));
    }
    // p = tau A v; w = p - (tau/2)(p.v) v
    __m256d pv = zero;
    for (int i = k + 1; i < n; ++i) {
      const __m256d p = _mm256_mul_pd(tau, _mm256_loadu_pd(pN + 4 * i));
      _mm256_storeu_pd(pN + 4 * i, p);
      pv = _mm256_fmadd_pd(p, _mm256_loadu_pd(vN + 4 * i), pv);
    }
    const __m256d alpha2 = _mm256_mul_pd(_mm256_mul_pd(_mm256_sub_pd(zero, half), tau), pv);
    for (int i = k + 1; i < n; ++i)
      _mm256_storeu_pd(pN + 4 * i, _mm256_fmadd_pd(alpha2, _mm256_loadu_pd(vN + 4 * i), _mm256_loadu_pd(pN + 4 * i)));
    std::swap(v, vN);
    std::swap(w, pN);
    pending = true;
  }
  // last diagonal entry, after the pending update
  double* last = a + 4 * packedRow(n - 1, n);
  __m256d x = _mm256_loadu_pd(last);
  if (pending) {
    const __m256d vl = _mm256_loadu_pd(v + 4 * (n - 1)), wl = _mm256_loadu_pd(w + 4 * (n - 1));
    x = _mm256_fnmadd_pd(_mm256_add_pd(vl, vl), wl, x);
  }
  _mm256_storeu_pd(d + 4 * (n - 1), x);
}

// Eigenvalues of the symmetric tridiagonal (d[0..n-1], e[0..n-2]) by the root-free rational QL
// method of Pal, Walker and Kahan (EISPACK tqlrat; the same family as LAPACK's dsterf), unsorted,
// into d; e is destroyed. One reciprocal instead of two divisions per step and no sorting:
// measured 1.3-1.6x faster than dsterf at N = 256, eigenvalues equal to ~1e-15 relative.
// Returns false if an eigenvalue needs more than 60 iterations (the caller falls back to dsterf).
bool tridiagonalEigenvaluesPWK(int n, double* d, double* e) {
  if (n <= 1) return true;
  const double eps = std::numeric_limits<double>::epsilon();
  // e2[i] = e[i]^2 (coupling i, i+1), e2[n-1] = 0
  double* e2 = e;
  for (int i = 0; i < n - 1; ++i) e2[i] = e[i] * e[i];
  e2[n - 1] = 0;
  double f = 0, t = 0, b = 0, c = 0;
  for (int l = 0; l < n; ++l) {
    int iter = 0;
    const double hh = std::fabs(d[l]) + std::sqrt(e2[l]);
    if (t <= hh) {
      t = hh;
      b = eps * t;
      c = b * b;
    }
    int m = l;
    while (e2[m] > c) ++m;  // e2[n-1] = 0 stops it
    if (m != l) {
      for (;;) {
        if (++iter > 60) return false;
        // shift from the leading 2x2 block
        const double s0 = std::sqrt(e2[l]);
        const double g0 = d[l];
        const double p0 = (d[l + 1] - g0) / (2 * s0);
        const double r0 = std::hypot(p0, 1.0);
        d[l] = s0 / (p0 + (p0 >= 0 ? r0 : -r0));
        const double h0 = g0 - d[l];
        for (int i = l + 1; i < n; ++i) d[i] -= h0;
        f += h0;
        // rational QL transformation
        double g = d[m];
        if (g == 0) g = b;
        double h = g, s = 0;
        for (int i = m - 1; i >= l; --i) {
          const double p = g * h;
          const double r = p + e2[i];
          const double rinv = 1.0 / r;
          e2[i + 1] = s * r;
          s = e2[i] * rinv;
          d[i + 1] = h + s * (h + d[i]);
          g = d[i] - e2[i] / g;
          if (g == 0) g = b;
          h = g * p * rinv;
        }
        e2[l] = s * g;
        d[l] = h;
        if (h == 0) break;
        if (std::fabs(e2[l]) <= std::fabs(c / h)) break;
        e2[l] = h * e2[l];
        if (e2[l] == 0) break;
      }
    }
    d[l] += f;
  }
  return true;
}

bool laneKernelSupported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

// Renyi entropies of four packed matrices M_l = x_l o k_l (null factors = ones): fill the lanes,
// tridiagonalise them together, then eigenvalues per lane. out_l may be null (padding lane).
void entropies4(const double* x0, const double* k0, const double* x1, const double* k1, const double* x2,
                const double* k2, const double* x3, const double* k3, int n, double alpha, Workspace& ws,
                double* out0, double* out1, double* out2, double* out3) {
  const size_t len = packedSize(n);
  if (ws.lanes.size() != 4 * len) {
    ws.lanes.assign(4 * len, 0.0);
    ws.laneD.assign(4 * size_t(n), 0.0);
    ws.laneE.assign(4 * size_t(n), 0.0);
    ws.laneWork.assign(16 * size_t(n), 0.0);
  }
  const double* xs[4] = {x0, x1, x2, x3};
  const double* ks[4] = {k0, k1, k2, k3};
  double* outs[4] = {out0, out1, out2, out3};
  double* a = ws.lanes.data();
  for (int l = 0; l < 4; ++l) {
    const double *x = xs[l], *k = ks[l];
    if (x && k) for (size_t p = 0; p < len; ++p) a[4 * p + l] = x[p] * k[p];
    else if (k) for (size_t p = 0; p < len; ++p) a[4 * p + l] = k[p];
    else if (x) for (size_t p = 0; p < len; ++p) a[4 * p + l] = x[p];
    else for (size_t p = 0; p < len; ++p) a[4 * p + l] = 1.0;
  }
  CompensatedSum tr[4];
  for (int i = 0; i < n; ++i)
    for (int l = 0; l < 4; ++l) tr[l].add(a[4 * packedRow(i, n) + l]);
  tridiagonal4(a, n, ws.laneD.data(), ws.laneE.data(), ws.laneWork.data());
  for (int l = 0; l < 4; ++l) {
    if (!outs[l]) continue;
    auto load = [&]() {
      for (int i = 0; i < n; ++i) ws.d[i] = ws.laneD[4 * i + l];
      for (int i = 0; i + 1 < n; ++i) ws.e[i] = ws.laneE[4 * i + l];
    };
    load();
    if (!tridiagonalEigenvaluesPWK(n, ws.d.data(), ws.e.data())) {
      load();
      int info = 0;
      dsterf_(&n, ws.d.data(), ws.e.data(), &info);
      if (info != 0) throw std::runtime_error("dsterf did not converge (info " + std::to_string(info) + ")");
    }
    *outs[l] = renyiFromEigenvalues(ws.d.data(), n, tr[l].value(), alpha);
  }
}

// Log mode (the 'mean' width rule; EntropyRequest in src/cmi/backend.ts): the packed joint kernel
// out = exp(o + s * (b + l)) with null terms left out, in the order of operations of the
// TypeScript jointKernel, so both paths build the same matrix up to exp's last ulp.
void logJoint(const double* o, const double* b, const double* l, double s, size_t len, double* out) {
  for (size_t p = 0; p < len; ++p) {
    const double t = (b ? b[p] : 0.0) + (l ? l[p] : 0.0);
    out[p] = std::exp(o ? o[p] + s * t : s * t);
  }
}

// Workspaces are pooled across calls: allocating 2 x N^2 doubles per call costs page faults that
// show up when a call evaluates few candidates. At most a few per N are ever kept.
class WorkspacePool {
 public:
  std::unique_ptr<Workspace> acquire(int n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if ((*it)->n == n) {
          auto ws = std::move(*it);
          free_.erase(it);
          return ws;
        }
      }
    }
    return std::make_unique<Workspace>(n);
  }
  void release(std::unique_ptr<Workspace> ws) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < 8) free_.push_back(std::move(ws));
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<Workspace>> free_;
};
WorkspacePool& workspaces() {
  static WorkspacePool* pool = new WorkspacePool();  // never destroyed: no exit-order issues
  return *pool;
}

// Runs body(item, workspace) for item in [0, count) on `threads` threads with one BLAS thread each
// (n = 0: no workspace needed). Items are handed out dynamically.
template <class F>
void parallelItems(int count, int threads, int n, F body) {
  // Our threads are the parallelism: OpenBLAS goes single-threaded for the rest of the process.
  // (Restoring its thread count after each call was measured to cost milliseconds per call: its
  // pool threads wake up and spin on the cores our workers need.)
  const Lapack& lib = lapack();
  if (lib.setThreads && (!lib.getThreads || lib.getThreads() != 1)) lib.setThreads(1);
  std::atomic<int> next{0};
  std::string error;
  std::atomic<bool> failed{false};
  auto run = [&]() {
    try {
      std::unique_ptr<Workspace> ws = n > 0 ? workspaces().acquire(n) : nullptr;
      Workspace* w = ws.get();
      for (int i = next++; i < count && !failed; i = next++) body(i, *w);
      if (ws) workspaces().release(std::move(ws));
    } catch (const std::exception& e) {
      if (!failed.exchange(true)) error = e.what();
    }
  };
  const int t = std::max(1, std::min(threads, count));
  std::vector<std::thread> pool;
  for (int k = 1; k < t; ++k) pool.emplace_back(run);
  run();
  for (auto& th : pool) th.join();
  if (failed) throw std::runtime_error(error);
}

// A typed array kept alive (and its data pointer fixed) while work runs off the JS thread.
struct Pinned {
  Napi::Reference<Napi::TypedArray> ref;
  const double* f64 = nullptr;
  const float* f32 = nullptr;
  const int32_t* i32 = nullptr;
  size_t length = 0;
};

Pinned pin(Napi::Env env, Napi::Value v, const std::string& what, bool allowF32 = false, bool int32 = false) {
  if (!v.IsTypedArray()) fail(env, what + " must be a typed array");
  auto t = v.As<Napi::TypedArray>();
  Pinned p;
  p.length = t.ElementLength();
  auto type = t.TypedArrayType();
  if (int32) {
    if (type != napi_int32_array) fail(env, what + " must be an Int32Array");
    p.i32 = v.As<Napi::Int32Array>().Data();
  } else if (type == napi_float64_array) {
    p.f64 = v.As<Napi::Float64Array>().Data();
  } else if (allowF32 && type == napi_float32_array) {
    p.f32 = v.As<Napi::Float32Array>().Data();
  } else {
    fail(env, what + (allowF32 ? " must be a Float32Array or Float64Array" : " must be a Float64Array"));
  }
  p.ref = Napi::Persistent(t);
  return p;
}

int intArg(Napi::Env env, Napi::Value v, const std::string& what, int lo) {
  if (!v.IsNumber()) fail(env, what + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo) || d != std::floor(d) || d > 2147483647.0) fail(env, what + " must be an integer >= " + std::to_string(lo));
  return int(d);
}

// ---- entropies(req) -------------------------------------------------------------------------------
// For each candidate c: M = base o K_c (base = ones when null; K_c = ones when c = -1);
// entropy[k] = S(M / tr M); entropyOther[k] = S(other o M / tr) when other is given.
class EntropiesWork : public Napi::AsyncWorker {
 public:
  EntropiesWork(Napi::Env env) : Napi::AsyncWorker(env, "cmiprune:entropies"), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  int n = 0, threads = 1;
  double alpha = 1.01;
  bool forceLapack = false;  // use dsytrd per matrix instead of the 4-lane reduction (for checks)
  bool logMode = false;      // base, kernels are log-kernels; M_c = exp(logOffset + logScale (base + L_c))
  double logScale = 1;
  Pinned base, other, kernels, candidates, logOffset;
  int numKernels = 0;

 protected:
  // Log mode: each matrix's joint kernel is materialised (packed, in the workspace) by logJoint, then
  // reduced by the same entropy kernels as the plain mode, with x = null (M) or x = other (Y o M).
  // The exp pass costs O(N^2) against the O(N^3) reduction.
  void ExecuteLog() {
    const int m = int(candidates.length);
    const size_t len = packedSize(n);
    std::vector<double> bP, oP, yP;
    if (base.f64) bP.resize(len), pack(base.f64, n, bP.data());
    if (logOffset.f64) oP.resize(len), pack(logOffset.f64, n, oP.data());
    if (other.f64) yP.resize(len), pack(other.f64, n, yP.data());
    const double* b = base.f64 ? bP.data() : nullptr;
    const double* o = logOffset.f64 ? oP.data() : nullptr;
    const double* y = other.f64 ? yP.data() : nullptr;
    auto logKernel = [&](int c) { return c >= 0 ? kernels.f64 + size_t(c) * len : nullptr; };
    if (alpha == 2.0) {
      parallelItems(m, m >= 64 ? threads : 1, n, [&](int k, Workspace& ws) {
        ws.joints.resize(len);
        logJoint(o, b, logKernel(candidates.i32[k]), logScale, len, ws.joints.data());
        entropy_[k] = entropy2Packed(nullptr, ws.joints.data(), n);
        if (y) entropyOther_[k] = entropy2Packed(y, ws.joints.data(), n);
      });
    } else if (!forceLapack && laneKernelSupported()) {
      struct Job {
        const double* x;
        int c;
        double* out;
      };
      std::vector<Job> jobs;
      for (int k = 0; k < m; ++k) {
        jobs.push_back({nullptr, candidates.i32[k], &entropy_[k]});
        if (y) jobs.push_back({y, candidates.i32[k], &entropyOther_[k]});
      }
      const int batches = int((jobs.size() + 3) / 4);
      parallelItems(batches, threads, n, [&](int bi, Workspace& ws) {
        ws.joints.resize(4 * len);
        Job lane[4];
        const double* ks[4];
        int live = 0;
        for (int l = 0; l < 4; ++l) {
          size_t j = size_t(bi) * 4 + l;
          if (j >= jobs.size()) break;
          lane[live] = jobs[j];
          if (live > 0 && lane[live].c == lane[live - 1].c) {
            ks[live] = ks[live - 1];  // M and Y o M of one candidate share its joint kernel
          } else {
            logJoint(o, b, logKernel(lane[live].c), logScale, len, ws.joints.data() + size_t(live) * len);
            ks[live] = ws.joints.data() + size_t(live) * len;
          }
          ++live;
        }
        for (int l = live; l < 4; ++l) lane[l] = {lane[0].x, lane[0].c, nullptr}, ks[l] = ks[0];  // padding, discarded
        entropies4(lane[0].x, ks[0], lane[1].x, ks[1], lane[2].x, ks[2], lane[3].x, ks[3], n, alpha, ws, lane[0].out,
                   lane[1].out, lane[2].out, lane[3].out);
      });
    } else {
      parallelItems(m, threads, n, [&](int k, Workspace& ws) {
        ws.joints.resize(len);
        logJoint(o, b, logKernel(candidates.i32[k]), logScale, len, ws.joints.data());
        fillUpper(nullptr, other.f64, ws.joints.data(), n, ws.a.data(), y ? ws.a2.data() : nullptr);
        entropy_[k] = entropyUpper(ws.a.data(), ws, alpha);
        if (y) entropyOther_[k] = entropyUpper(ws.a2.data(), ws, alpha);
      });
    }
  }

  void Execute() override {
    const int m = int(candidates.length);
    entropy_.assign(m, 0.0);
    if (other.f64) entropyOther_.assign(m, 0.0);
    const size_t nn = size_t(n) * n;
    try {
      if (logMode) {
        ExecuteLog();
        return;
      }
      // by = base o other, shared by all candidates: Y o M = by o K_c
      const double* b = base.f64;
      const double* y = other.f64;
      std::vector<double> byStore;
      const double* by = y;
      if (y && b) {
        byStore.resize(nn);
        for (size_t i = 0; i < nn; ++i) byStore[i] = b[i] * y[i];
        by = byStore.data();
      }
      if (alpha == 2.0) {
        // everything packed: one contiguous pass per entropy
        const size_t len = packedSize(n);
        std::vector<double> bP, byP, yP, onesP;
        if (b) bP.resize(len), pack(b, n, bP.data());
        if (by) byP.resize(len), pack(by, n, byP.data());
        if (y && b) yP.resize(len), pack(y, n, yP.data());
        // ~30 us per item: a second thread only pays off for larger batches (on a busy machine
        // it may take a scheduler tick to start)
        parallelItems(m, m >= 64 ? threads : 1, 0, [&](int k, Workspace&) {
          const int c = candidates.i32[k];
          if (c >= 0) {  // M = b o K_c, Y o M = by o K_c
            const double* kc = kernels.f64 + size_t(c) * len;
            if (b && y) {
              double pair[2];
              entropy2PackedPair(bP.data(), byP.data(), kc, n, pair);
              entropy_[k] = pair[0];
              entropyOther_[k] = pair[1];
            } else {
              entropy_[k] = entropy2Packed(b ? bP.data() : nullptr, kc, n);
              if (y) entropyOther_[k] = entropy2Packed(byP.data(), kc, n);
            }
          } else if (b) {  // M = b, Y o M = y o b
            entropy_[k] = entropy2Packed(nullptr, bP.data(), n);
            if (y) entropyOther_[k] = entropy2Packed(yP.data(), bP.data(), n);
          } else {  // M = ones, Y o M = y
            entropy_[k] = 0;  // S(11^T / N) = 0 exactly
            if (y) entropyOther_[k] = entropy2Packed(nullptr, byP.data(), n);
          }
        });
      } else if (!forceLapack && laneKernelSupported()) {
        // matrices to reduce: M_k = mx o mk and, with labels, (Y o M)_k; null factors are ones
        const size_t len = packedSize(n);
        std::vector<double> bP, byP;
        if (b) bP.resize(len), pack(b, n, bP.data());
        if (by) byP.resize(len), pack(by, n, byP.data());
        struct Job {
          const double* x;
          const double* k;
          double* out;
        };
        std::vector<Job> jobs;
        for (int k = 0; k < m; ++k) {
          const int c = candidates.i32[k];
          const double* kc = c >= 0 ? kernels.f64 + size_t(c) * len : nullptr;
          if (c >= 0) jobs.push_back({b ? bP.data() : nullptr, kc, &entropy_[k]});
          else jobs.push_back({nullptr, b ? bP.data() : nullptr, &entropy_[k]});
          if (y) {
            if (c >= 0) jobs.push_back({byP.data(), kc, &entropyOther_[k]});
            else jobs.push_back({nullptr, byP.data(), &entropyOther_[k]});
          }
        }
        const int batches = int((jobs.size() + 3) / 4);
        parallelItems(batches, threads, n, [&](int bi, Workspace& ws) {
          Job lane[4];
          int live = 0;
          for (int l = 0; l < 4; ++l) {
            size_t j = size_t(bi) * 4 + l;
            if (j < jobs.size()) lane[live++] = jobs[j];
          }
          for (int l = live; l < 4; ++l) lane[l] = {lane[0].x, lane[0].k, nullptr};  // padding, discarded
          entropies4(lane[0].x, lane[0].k, lane[1].x, lane[1].k, lane[2].x, lane[2].k, lane[3].x, lane[3].k, n,
                     alpha, ws, lane[0].out, lane[1].out, lane[2].out, lane[3].out);
        });
      } else {
        parallelItems(m, threads, n, [&](int k, Workspace& ws) {
          const int c = candidates.i32[k];
          double* a2 = y ? ws.a2.data() : nullptr;
          if (c >= 0) {
            fillUpper(b, by, kernels.f64 + size_t(c) * packedSize(n), n, ws.a.data(), a2);
          } else {  // base alone (or ones)
            for (int i = 0; i < n; ++i)
              for (int j = i; j < n; ++j) {
                const size_t r = size_t(i) * n + j;
                ws.a[r] = b ? b[r] : 1.0;
                if (a2) a2[r] = by[r];
              }
          }
          entropy_[k] = entropyUpper(ws.a.data(), ws, alpha);
          if (y) entropyOther_[k] = entropyUpper(a2, ws, alpha);
        });
      }
    } catch (const std::exception& e) {
      SetError(std::string("entropies: ") + e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Object out = Napi::Object::New(env);
    auto e = Napi::Float64Array::New(env, entropy_.size());
    std::copy(entropy_.begin(), entropy_.end(), e.Data());
    out.Set("entropy", e);
    if (other.f64) {
      auto o = Napi::Float64Array::New(env, entropyOther_.size());
      std::copy(entropyOther_.begin(), entropyOther_.end(), o.Data());
      out.Set("entropyOther", o);
    } else {
      out.Set("entropyOther", env.Null());
    }
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<double> entropy_, entropyOther_;
};

// cmiEntropies({n, alpha, base, other, kernels, candidates, threads, lapack?, logScale?, logOffset?})
//   -> Promise<{entropy, entropyOther}>
Napi::Value Entropies(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) fail(env, "cmiEntropies(req): req must be an object");
  auto req = info[0].As<Napi::Object>();
  auto* w = new EntropiesWork(env);
  std::unique_ptr<EntropiesWork> guard(w);
  w->n = intArg(env, req.Get("n"), "cmiEntropies: n", 1);
  w->threads = req.Has("threads") && !req.Get("threads").IsUndefined() ? intArg(env, req.Get("threads"), "cmiEntropies: threads", 1) : 1;
  w->forceLapack = req.Get("lapack").IsBoolean() && req.Get("lapack").As<Napi::Boolean>().Value();
  if (!req.Get("alpha").IsNumber()) fail(env, "cmiEntropies: alpha must be a number");
  w->alpha = req.Get("alpha").As<Napi::Number>().DoubleValue();
  if (!(w->alpha > 0) || w->alpha == 1 || !std::isfinite(w->alpha)) fail(env, "cmiEntropies: alpha must be > 0 and != 1");
  const size_t nn = size_t(w->n) * w->n;
  auto optional = [&](const char* key, Pinned& p) {
    Napi::Value v = req.Get(key);
    if (v.IsNull() || v.IsUndefined()) return;
    p = pin(env, v, std::string("cmiEntropies: ") + key);
  };
  optional("base", w->base);
  optional("other", w->other);
  optional("kernels", w->kernels);
  Napi::Value ls = req.Get("logScale");
  if (!ls.IsUndefined() && !ls.IsNull()) {
    if (!ls.IsNumber()) fail(env, "cmiEntropies: logScale must be a number");
    w->logScale = ls.As<Napi::Number>().DoubleValue();
    if (!(w->logScale > 0) || !std::isfinite(w->logScale)) fail(env, "cmiEntropies: logScale must be finite and > 0");
    w->logMode = true;
    optional("logOffset", w->logOffset);
    if (w->logOffset.f64 && w->logOffset.length != nn) fail(env, "cmiEntropies: logOffset must have n*n entries");
  } else if (!req.Get("logOffset").IsUndefined() && !req.Get("logOffset").IsNull()) {
    fail(env, "cmiEntropies: logOffset needs logScale");
  }
  if (w->base.f64 && w->base.length != nn) fail(env, "cmiEntropies: base must have n*n entries");
  if (w->other.f64 && w->other.length != nn) fail(env, "cmiEntropies: other must have n*n entries");
  const size_t len = packedSize(w->n);
  if (w->kernels.f64 && w->kernels.length % len != 0) fail(env, "cmiEntropies: kernels must have C*n*(n+1)/2 entries");
  w->numKernels = w->kernels.f64 ? int(w->kernels.length / len) : 0;
  w->candidates = pin(env, req.Get("candidates"), "cmiEntropies: candidates", false, true);
  for (size_t k = 0; k < w->candidates.length; ++k) {
    int c = w->candidates.i32[k];
    if (c < -1 || c >= w->numKernels) fail(env, "cmiEntropies: candidate " + std::to_string(c) + " out of range");
  }
  guard.release();
  w->Queue();
  return w->Promise();
}

// ---- filterKernels(maps, n, c, hw, sigma, threads, log?) ------------------------------------------
// [C, N(N+1)/2] packed Gaussian kernels exp(-||x_i - x_j||^2 / (2 sigma^2)) of maps [N, C, HW], with squared
// distances summed directly (not via the Gram trick) for accuracy.
class KernelsWork : public Napi::AsyncWorker {
 public:
  KernelsWork(Napi::Env env) : Napi::AsyncWorker(env, "cmiprune:kernels"), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  int n = 0, c = 0, hw = 0, threads = 1;
  double sigma = 1;
  bool log = false;  // write the log-kernels -D / (2 sigma^2) instead
  Pinned maps;
  Napi::Reference<Napi::Float64Array> outRef;
  double* out = nullptr;

 protected:
  void Execute() override {
    const double scale = 1.0 / (2.0 * sigma * sigma);
    try {
      parallelItems(c, threads, 0, [&](int f, Workspace&) {
        std::vector<double> x(size_t(n) * hw);  // this filter's maps, contiguous
        for (int i = 0; i < n; ++i)
          for (int k = 0; k < hw; ++k) {
            size_t src = (size_t(i) * c + f) * hw + k;
            x[size_t(i) * hw + k] = maps.f64 ? maps.f64[src] : double(maps.f32[src]);
          }
        double* o = out + size_t(f) * packedSize(n);
        for (int i = 0; i < n; ++i) {
          const double* xi = &x[size_t(i) * hw];
          double* row = o + packedRow(i, n) - i;  // row[j] = K(i, j), j >= i
          row[i] = log ? 0.0 : 1.0;
          for (int j = i + 1; j < n; ++j) {
            const double* xj = &x[size_t(j) * hw];
            double s = 0;
            for (int k = 0; k < hw; ++k) {
              double t = xi[k] - xj[k];
              s += t * t;
            }
            row[j] = log ? -s * scale : std::exp(-s * scale);
          }
        }
      });
    } catch (const std::exception& e) {
      SetError(std::string("filterKernels: ") + e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(outRef.Value()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
};

Napi::Value FilterKernels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* w = new KernelsWork(env);
  std::unique_ptr<KernelsWork> guard(w);
  w->maps = pin(env, info[0], "cmiFilterKernels: maps", true);
  w->n = intArg(env, info[1], "cmiFilterKernels: n", 1);
  w->c = intArg(env, info[2], "cmiFilterKernels: c", 1);
  w->hw = intArg(env, info[3], "cmiFilterKernels: hw", 1);
  if (!info[4].IsNumber() || !(info[4].As<Napi::Number>().DoubleValue() > 0)) fail(env, "cmiFilterKernels: sigma must be > 0");
  w->sigma = info[4].As<Napi::Number>().DoubleValue();
  w->threads = info[5].IsUndefined() ? 1 : intArg(env, info[5], "cmiFilterKernels: threads", 1);
  w->log = info[6].IsBoolean() && info[6].As<Napi::Boolean>().Value();
  if (w->maps.length != size_t(w->n) * w->c * w->hw) fail(env, "cmiFilterKernels: maps must have n*c*hw entries");
  auto out = Napi::Float64Array::New(env, size_t(w->c) * packedSize(w->n));
  w->out = out.Data();
  w->outRef = Napi::Persistent(out);
  guard.release();
  w->Queue();
  return w->Promise();
}

// cmiEigvalsh(a: Float64Array, n) -> Float64Array: ascending eigenvalues of a symmetric matrix (sync).
Napi::Value Eigvalsh(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Pinned a = pin(env, info[0], "cmiEigvalsh: a");
  int n = intArg(env, info[1], "cmiEigvalsh: n", 1);
  if (a.length != size_t(n) * n) fail(env, "cmiEigvalsh: a must have n*n entries");
  Workspace ws(n);
  std::memcpy(ws.a.data(), a.f64, a.length * sizeof(double));
  int lwork = int(ws.work.size()), info2 = 0;
  dsytrd_("L", &n, ws.a.data(), &n, ws.d.data(), ws.e.data(), ws.tau.data(), ws.work.data(), &lwork, &info2);
  if (info2 == 0) dsterf_(&n, ws.d.data(), ws.e.data(), &info2);
  if (info2 != 0) fail(env, "cmiEigvalsh: LAPACK failed (info " + std::to_string(info2) + ")");
  auto out = Napi::Float64Array::New(env, n);
  std::copy(ws.d.begin(), ws.d.end(), out.Data());
  return out;
}

}  // namespace

void InitLinalg(Napi::Env env, Napi::Object exports) {
  exports.Set("cmiEntropies", Napi::Function::New(env, Entropies));
  exports.Set("cmiFilterKernels", Napi::Function::New(env, FilterKernels));
  exports.Set("cmiEigvalsh", Napi::Function::New(env, Eigvalsh));
}
