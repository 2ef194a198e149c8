// 3x3 stride-1 pad-1 convolution by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray 2016),
// forward and both gradients. Hand-written because libtorch's CPU convolutions (oneDNN 2.x) have
// no Winograd path on AVX2 machines: F(4x4,3x3) needs 36 multiplies per 16 outputs instead of 144.
#pragma once
#include <torch/torch.h>

namespace cmi::winograd {

// True when conv(x, w) with these settings can take this path: 3x3 kernel, stride 1, padding 1,
// dilation 1, one group, and output height/width multiples of 4 (whole 4x4 tiles).
bool eligible(const torch::Tensor& x, const torch::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
              at::IntArrayRef dilation, int64_t groups);

// Eligible, and expected to beat libtorch's own convolution (see the measurement in the .cc);
// `vsBlocked`: the alternative is oneDNN with prepacked weights and blocked activations.
bool preferred(const torch::Tensor& x, const torch::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
               at::IntArrayRef dilation, int64_t groups, bool vsBlocked);

// w [Cout, Cin, 3, 3] -> U [36, Cout, Cin] = G w G^T per (Cout, Cin).
torch::Tensor transformWeight(const torch::Tensor& w);

// x [N, Cin, H, W], U from transformWeight, bias [Cout] or undefined -> y [N, Cout, H, W].
torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& U, const torch::Tensor& bias);

// Buffers a caller keeps for one layer across training calls: the transformed weight U and the
// forward's transformed input tiles V, both reused by that call's backward and rewritten by the
// next call (fresh buffers of tens of MB per call come from mmap: their page faults cost more
// than the transforms). Holds ~4x the layer's weights plus 2.25x its input.
struct TrainStore {
  torch::Tensor U, V;
};

// Autograd-aware conv2d(x, w, b, stride 1, padding 1): forward, input and weight gradients;
// `store`, when given, holds this layer's buffers (the previous call's graph must be gone).
torch::Tensor conv3x3(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                      TrainStore* store = nullptr);

}  // namespace cmi::winograd
