// Training-mode BatchNorm followed by ReLU as one autograd op. libtorch runs them as five passes
// over the activation (stats, normalise, relu, then threshold_backward and the two of BN's
// backward, which re-read what the previous pass wrote); here each channel is finished while it is
// still in cache: forward reads x for the statistics and again (from cache) to write y, backward
// reads x and dy twice and writes dx. The ReLU mask is recomputed from x, so y is not kept.
#pragma once
#include <torch/torch.h>

namespace cmi::bnrelu {

// x: contiguous float CPU [N, C, H, W] or [N, C] with N*H*W > 1; weight, bias [C] (affine BN).
bool supported(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// relu(batch_norm(x)) with batch statistics, as torch::batch_norm(training=true) then relu:
// differentiable in x, weight and bias; runningMean/runningVar (if defined) get PyTorch's update
// (momentum-weighted, unbiased variance).
torch::Tensor train(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                    const torch::Tensor& runningMean, const torch::Tensor& runningVar, double momentum, double eps);

}  // namespace cmi::bnrelu
