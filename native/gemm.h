// Single-precision matrix multiplies on CPU for the hand-written convolution paths, choosing per
// shape between oneDNN's sgemm and the BLAS behind libtorch (at::mm), and splitting one multiply
// across the engine's threads where libtorch would run it on one (its BLAS is kept single-threaded).
#pragma once
#include <torch/torch.h>

namespace cmi::gemm {

// out = a b for 2-d float CPU tensors (any row or column strides), on the calling thread only.
void serial(const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& out);

// out = a b, the output split into blocks over the engine's threads.
void parallel(const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& out);

// Autograd-aware x [N, K] w^T ([M, K]) + bias [M] (bias may be undefined), every multiply of
// forward and backward through `parallel`.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias);

}  // namespace cmi::gemm
