#include "gemm.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>

namespace cmi::gemm {
namespace {

// oneDNN's sgemm when the process has it (libtorch's CPU build links oneDNN as a shared library on
// Debian). Looked up at run time because other libtorch builds link oneDNN statically and hide it.
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
DnnlSgemm dnnlSgemm() {
  static DnnlSgemm fn = [] {
    void* f = dlsym(RTLD_DEFAULT, "dnnl_sgemm");
    // node dlopens addons locally, so libtorch's own dependencies may be outside the global scope
    if (!f)
      if (void* lib = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_NOLOAD)) f = dlsym(lib, "dnnl_sgemm");
    return reinterpret_cast<DnnlSgemm>(f);
  }();
  return fn;
}

// A 2-d float view as a row-major BLAS operand: ('N', row stride) or ('T', column stride).
bool blasOperand(const torch::Tensor& m, char& trans, int64_t& ld) {
  if (m.stride(1) == 1 && m.stride(0) >= std::max<int64_t>(1, m.size(1))) {
    trans = 'N', ld = m.stride(0);
    return true;
  }
  if (m.stride(0) == 1 && m.stride(1) >= std::max<int64_t>(1, m.size(0))) {
    trans = 'T', ld = m.stride(1);
    return true;
  }
  return false;
}

}  // namespace

void serial(const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& out) {
  // Measured single-threaded on an AVX2 EPYC (Winograd and tiny-conv shapes): oneDNN is 10-45%
  // faster while the output has at most 512 columns and `a` is not transposed; Debian's OpenBLAS is
  // 30-60% faster on wider outputs and 10-25% faster with a transposed `a` (the Winograd input
  // gradient U^T dM).
  const DnnlSgemm sgemm = out.size(1) <= 512 ? dnnlSgemm() : nullptr;
  char ta, tb, to;
  int64_t lda, ldb, ldo;
  if (sgemm && blasOperand(a, ta, lda) && ta == 'N' && blasOperand(b, tb, ldb) && blasOperand(out, to, ldo) &&
      to == 'N' &&
      sgemm(ta, tb, a.size(0), b.size(1), a.size(1), 1.f, a.data_ptr<float>(), lda, b.data_ptr<float>(), ldb, 0.f,
            out.data_ptr<float>(), ldo) == 0)
    return;
  at::mm_out(out, a, b);
}

void parallel(const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& out) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2 && a.size(1) == b.size(0) && out.size(0) == a.size(0) &&
                  out.size(1) == b.size(1),
              "gemm: shapes do not match");
  const int64_t M = out.size(0), N = out.size(1), P = std::max(1, at::get_num_threads());
  // split the longer side of the output into one block per thread (at least 64 rows or columns)
  const bool byRows = M >= N;
  const int64_t len = byRows ? M : N, block = std::max<int64_t>(64, (len + P - 1) / P);
  const bool inference = c10::InferenceMode::is_enabled();  // thread-local: carry it to the workers
  at::parallel_for(0, (len + block - 1) / block, 1, [&](int64_t begin, int64_t end) {
    c10::InferenceMode mode(inference);
    torch::NoGradGuard noGrad;  // nor do workers inherit the caller's autograd state: keep out= ops legal
    for (int64_t i = begin; i < end; ++i) {
      const int64_t s = i * block, n = std::min(block, len - s);
      auto o = byRows ? out.narrow(0, s, n) : out.narrow(1, s, n);
      serial(byRows ? a.narrow(0, s, n) : a, byRows ? b : b.narrow(1, s, n), o);
    }
  });
}

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct LinearFn : public torch::autograd::Function<LinearFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& b) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["bias"] = b.numel() > 0;
    auto y = torch::empty({x.size(0), w.size(0)}, x.options());
    parallel(x, w.t(), y);
    if (b.numel() > 0) y.add_(b);
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    auto gy = grads[0].contiguous();
    torch::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) {
      gx = torch::empty({x.size(0), x.size(1)}, x.options());
      parallel(gy, w, gx);
    }
    if (ctx->needs_input_grad(1)) {
      gw = torch::empty({w.size(0), w.size(1)}, w.options());
      parallel(gy.t(), x, gw);
    }
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) gb = gy.sum(0);
    return {gx, gw, gb};
  }
};
}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1) && x.scalar_type() == torch::kFloat &&
                  w.scalar_type() == torch::kFloat && x.device().is_cpu(),
              "gemm::linear: needs float CPU x [N, K] and w [M, K]");
  // apply() takes no undefined tensors: an empty one stands for "no bias"
  return LinearFn::apply(x.contiguous(), w, bias.defined() ? bias : torch::empty({0}, w.options()));
}

}  // namespace cmi::gemm
