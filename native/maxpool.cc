#include "maxpool.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace cmi::maxpool {

bool eligible(const torch::Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
              bool ceilMode) {
  if (x.dim() != 4 || !x.device().is_cpu() || x.scalar_type() != torch::kFloat || x.is_mkldnn() ||
      !x.is_contiguous() || kernel.size() != 2 || stride.size() != 2 || padding.size() != 2)
    return false;
  const int64_t kh = kernel[0], kw = kernel[1];
  if (stride[0] != kh || stride[1] != kw || padding[0] != 0 || padding[1] != 0 || kh < 1 || kw < 1 || kh * kw > 255)
    return false;
  const int64_t H = x.size(2), W = x.size(3);
  // ceil mode only adds partial windows when the size is not a multiple of the window
  return H >= kh && W >= kw && (!ceilMode || (H % kh == 0 && W % kw == 0));
}

namespace {

// One plane: y[oy, ox] = max of its window; pos (if given) = the winner's row-major window offset.
// Compile-time window sizes (the 2x2 case) let the compiler unroll the scan.
template <int64_t KH, int64_t KW>
void poolPlane(const float* x, int64_t W, int64_t OH, int64_t OW, int64_t kh, int64_t kw, float* y, uint8_t* pos) {
  if (KH > 0) kh = KH, kw = KW;
  for (int64_t oy = 0; oy < OH; ++oy)
    for (int64_t ox = 0; ox < OW; ++ox) {
      const float* win = x + oy * kh * W + ox * kw;
      float m = -std::numeric_limits<float>::infinity();
      int64_t best = 0;
      for (int64_t r = 0; r < kh; ++r)
        for (int64_t s = 0; s < kw; ++s) {
          const float v = win[r * W + s];
          if (v > m || std::isnan(v)) m = v, best = r * kw + s;  // libtorch's rule
        }
      y[oy * OW + ox] = m;
      if (pos) pos[oy * OW + ox] = static_cast<uint8_t>(best);
    }
}

// One plane of the gradient: every input element is written once, with its window's gradient if
// it was the winner, else zero (also the rows/columns floor mode left out).
template <int64_t KH, int64_t KW>
void unpoolPlane(const float* g, const uint8_t* pos, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t kh,
                 int64_t kw, float* dx) {
  if (KH > 0) kh = KH, kw = KW;
  for (int64_t iy = 0; iy < H; ++iy) {
    float* row = dx + iy * W;
    const int64_t oy = iy / kh, r = iy % kh;
    if (oy >= OH) {
      std::fill(row, row + W, 0.f);
      continue;
    }
    for (int64_t ox = 0; ox < OW; ++ox) {
      const int64_t q = pos[oy * OW + ox] - r * kw;  // winner's column in this row of the window, if in it
      const float v = g[oy * OW + ox];
      for (int64_t s = 0; s < kw; ++s) row[ox * kw + s] = q == s ? v : 0.f;
    }
    std::fill(row + OW * kw, row + W, 0.f);
  }
}

void pool(const torch::Tensor& x, int64_t kh, int64_t kw, torch::Tensor& y, uint8_t* pos) {
  const int64_t P = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), OH = y.size(2), OW = y.size(3);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const bool two = kh == 2 && kw == 2;
  at::parallel_for(0, P, std::max<int64_t>(1, 4096 / (H * W)), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      uint8_t* pp = pos ? pos + p * OH * OW : nullptr;
      if (two)
        poolPlane<2, 2>(xp + p * H * W, W, OH, OW, kh, kw, yp + p * OH * OW, pp);
      else
        poolPlane<0, 0>(xp + p * H * W, W, OH, OW, kh, kw, yp + p * OH * OW, pp);
    }
  });
}

struct MaxPoolFn : public torch::autograd::Function<MaxPoolFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, int64_t kh,
                               int64_t kw) {
    RECORD_FUNCTION("maxpool::forward", std::vector<c10::IValue>({x}));
    auto y = torch::empty({x.size(0), x.size(1), x.size(2) / kh, x.size(3) / kw}, x.options());
    auto pos = torch::empty(y.sizes(), x.options().dtype(torch::kByte));
    pool(x, kh, kw, y, pos.data_ptr<uint8_t>());
    ctx->saved_data["pos"] = pos;
    ctx->saved_data["shape"] = x.sizes().vec();
    ctx->saved_data["kernel"] = std::vector<int64_t>{kh, kw};
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("maxpool::backward", std::vector<c10::IValue>());
    auto pos = ctx->saved_data["pos"].toTensor();
    auto shape = ctx->saved_data["shape"].toIntVector();
    auto k = ctx->saved_data["kernel"].toIntVector();
    auto dy = grads[0].contiguous();
    const int64_t kh = k[0], kw = k[1], H = shape[2], W = shape[3], OH = dy.size(2), OW = dy.size(3);
    const int64_t P = shape[0] * shape[1];
    auto dx = torch::empty(shape, dy.options());
    const float* dyp = dy.data_ptr<float>();
    const uint8_t* posp = pos.data_ptr<uint8_t>();
    float* dxp = dx.data_ptr<float>();
    at::parallel_for(0, P, std::max<int64_t>(1, 4096 / (H * W)), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        if (kh == 2 && kw == 2)
          unpoolPlane<2, 2>(dyp + p * OH * OW, posp + p * OH * OW, H, W, OH, OW, kh, kw, dxp + p * H * W);
        else
          unpoolPlane<0, 0>(dyp + p * OH * OW, posp + p * OH * OW, H, W, OH, OW, kh, kw, dxp + p * H * W);
      }
    });
    return {dx, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor forward(const torch::Tensor& x, int64_t kh, int64_t kw) {
  TORCH_CHECK(eligible(x, {kh, kw}, {kh, kw}, {0, 0}, false), "maxpool: needs contiguous float NCHW and kernel == stride");
  if (torch::GradMode::is_enabled() && x.requires_grad()) return MaxPoolFn::apply(x, kh, kw);
  RECORD_FUNCTION("maxpool::forward", std::vector<c10::IValue>({x}));
  auto y = torch::empty({x.size(0), x.size(1), x.size(2) / kh, x.size(3) / kw}, x.options());
  pool(x, kh, kw, y, nullptr);
  return y;
}

}  // namespace cmi::maxpool
