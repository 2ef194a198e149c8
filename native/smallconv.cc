#include "smallconv.h"

#include "gemm.h"

#include <ATen/Parallel.h>

#include <vector>

namespace cmi::smallconv {
bool preferred(const torch::Tensor& x, const torch::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
               at::IntArrayRef dilation, int64_t groups) {
  if (x.dim() != 4 || w.dim() != 4 || groups != 1 || x.scalar_type() != torch::kFloat || !x.device().is_cpu() ||
      stride.size() != 2 || padding.size() != 2 || dilation.size() != 2)
    return false;
  const int64_t H = x.size(2), W = x.size(3), kh = w.size(2), kw = w.size(3);
  const int64_t OH = outSize(H, kh, stride[0], padding[0], dilation[0]);
  const int64_t OW = outSize(W, kw, stride[1], padding[1], dilation[1]);
  if (OH <= 0 || OW <= 0 || H * W > kh * kw) return false;
  return w.size(0) * OH * OW * w.size(1) * H * W <= (int64_t{1} << 24);
}

namespace {
// Plain loops rather than index_select + permute: those copy through strided views at ~10x the cost.
struct ExpandFn : public torch::autograd::Function<ExpandFn> {
  // tap[p * HW + q]: kernel tap (ky * kw + kx) linking output pixel p to input pixel q, or -1
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& wIn,
                               const std::vector<int64_t>& tap, int64_t OHW, int64_t HW) {
    auto w = wIn.contiguous();
    const int64_t Co = w.size(0), Ci = w.size(1), K = w.size(2) * w.size(3);
    ctx->saved_data["tap"] = tap;
    ctx->saved_data["shape"] = w.sizes().vec();
    auto wx = torch::empty({Co * OHW, Ci * HW}, w.options());
    const float* wp = w.data_ptr<float>();
    float* xp = wx.data_ptr<float>();
    at::parallel_for(0, Co * OHW, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t co = r / OHW, p = r % OHW;
        const int64_t* t = tap.data() + p * HW;
        float* row = xp + r * Ci * HW;
        for (int64_t ci = 0; ci < Ci; ++ci) {
          const float* k = wp + (co * Ci + ci) * K;
          for (int64_t q = 0; q < HW; ++q) row[ci * HW + q] = t[q] < 0 ? 0.f : k[t[q]];
        }
      }
    });
    return wx;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto tap = ctx->saved_data["tap"].toIntVector();
    auto shape = ctx->saved_data["shape"].toIntVector();
    const int64_t Co = shape[0], Ci = shape[1], K = shape[2] * shape[3];
    auto g = grads[0].contiguous();
    const int64_t HW = g.size(1) / Ci, OHW = g.size(0) / Co;
    auto gw = torch::zeros(shape, g.options());
    const float* gp = g.data_ptr<float>();
    float* wp = gw.data_ptr<float>();
    at::parallel_for(0, Co, 1, [&](int64_t begin, int64_t end) {
      for (int64_t co = begin; co < end; ++co)
        for (int64_t p = 0; p < OHW; ++p) {
          const int64_t* t = tap.data() + p * HW;
          const float* row = gp + (co * OHW + p) * Ci * HW;
          for (int64_t ci = 0; ci < Ci; ++ci) {
            float* k = wp + (co * Ci + ci) * K;
            for (int64_t q = 0; q < HW; ++q)
              if (t[q] >= 0) k[t[q]] += row[ci * HW + q];
          }
        }
    });
    return {gw, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace

torch::Tensor expandWeight(const torch::Tensor& w, int64_t H, int64_t W, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(w.dim() == 4 && w.scalar_type() == torch::kFloat, "smallconv: weight must be 4-d float");
  const int64_t kh = w.size(2), kw = w.size(3);
  const int64_t OH = outSize(H, kh, stride[0], padding[0], dilation[0]);
  const int64_t OW = outSize(W, kw, stride[1], padding[1], dilation[1]);
  auto tapOf = [](int64_t i, int64_t o, int64_t s, int64_t p, int64_t d, int64_t k) -> int64_t {
    int64_t off = i + p - o * s;
    if (off < 0 || off % d != 0 || off / d >= k) return -1;
    return off / d;
  };
  std::vector<int64_t> tap;
  tap.reserve(OH * OW * H * W);
  for (int64_t oy = 0; oy < OH; ++oy)
    for (int64_t ox = 0; ox < OW; ++ox)
      for (int64_t iy = 0; iy < H; ++iy)
        for (int64_t ix = 0; ix < W; ++ix) {
          int64_t ky = tapOf(iy, oy, stride[0], padding[0], dilation[0], kh);
          int64_t kx = tapOf(ix, ox, stride[1], padding[1], dilation[1], kw);
          tap.push_back(ky < 0 || kx < 0 ? -1 : ky * kw + kx);
        }
  return ExpandFn::apply(w, tap, OH * OW, H * W);
}

torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& wx, const torch::Tensor& bias, int64_t outC,
                      int64_t OH, int64_t OW) {
  const int64_t N = x.size(0);
  auto x2 = x.reshape({N, -1});
  TORCH_CHECK(x2.size(1) == wx.size(1) && wx.size(0) == outC * OH * OW, "smallconv: expanded weight does not match");
  // libtorch's mm would run on one thread (its BLAS is kept single-threaded)
  auto y = gemm::linear(x2, wx, bias.defined() ? bias.repeat_interleave(OH * OW) : torch::Tensor());
  return y.view({N, outC, OH, OW});
}

}  // namespace cmi::smallconv
