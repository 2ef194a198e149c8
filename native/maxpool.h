// Max pooling over non-overlapping windows (kernel == stride, no padding: VGG's 2x2 pools) on
// contiguous NCHW float tensors. libtorch's NCHW CPU kernel is a scalar loop that also writes an
// int64 index per output (measured ~5 ms per VGG16 pool layer at batch 64 on 2 cores); this one
// keeps a one-byte window position instead, and none at all when no gradient is needed.
#pragma once
#include <torch/torch.h>

namespace cmi::maxpool {

// True for a 4-d contiguous float CPU x and windows that tile it without overlap or padding
// (a remainder at the bottom/right edge, as floor mode drops it, is allowed).
bool eligible(const torch::Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
              bool ceilMode);

// torch::max_pool2d(x, kernel, kernel) with the same tie rule (first maximum in row-major window
// order; NaN wins); differentiable in x when grad mode is on and x requires grad.
torch::Tensor forward(const torch::Tensor& x, int64_t kh, int64_t kw);

}  // namespace cmi::maxpool
