// A convolution over a tiny image (VGG's 2x2 maps on CIFAR) as one matrix multiply: every output
// pixel sees (almost) the whole input, so the [Cout*OH*OW, Cin*H*W] matrix that maps the flattened
// input to the flattened output is barely larger than the kernel, and one big GEMM per batch runs
// several times faster than oneDNN's direct kernels at this size (worst in the weight gradient).
#pragma once
#include <torch/torch.h>

namespace cmi::smallconv {

// Output size of a convolution along one axis.
inline int64_t outSize(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) { return (in + 2 * p - d * (k - 1) - 1) / s + 1; }

// True when the dense matrix needs no more multiply-adds than the direct convolution
// (H*W <= kh*kw) and stays small (<= 16M entries); one group only.
bool preferred(const torch::Tensor& x, const torch::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
               at::IntArrayRef dilation, int64_t groups);

// w [Cout, Cin, kh, kw] -> [Cout*OH*OW, Cin*H*W] for inputs of size H x W; differentiable in w.
torch::Tensor expandWeight(const torch::Tensor& w, int64_t H, int64_t W, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation);

// conv2d through the expanded matrix `wx` (from expandWeight); bias [Cout] or undefined.
// Differentiable in x, wx and bias (autograd through libtorch's own ops).
torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& wx, const torch::Tensor& bias, int64_t outC,
                      int64_t OH, int64_t OW);

}  // namespace cmi::smallconv
