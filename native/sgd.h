// SGD with momentum, Nesterov and weight decay: the update rule of torch.optim.SGD (dampening 0)
// in one pass over each parameter's memory. libtorch's SGD runs four element-wise ops per parameter,
// each a full pass over weights, gradients or momentum (~700 MB per VGG16 step instead of ~300).
#pragma once
#include <torch/torch.h>

#include <vector>

namespace cmi {

class FusedSgd {
 public:
  FusedSgd(std::vector<torch::Tensor> params, double momentum, bool nesterov, double weightDecay);
  // Replaces the momentum from the next step on; a parameter's buffer starts, as in PyTorch, at its
  // first step with momentum != 0.
  void setMomentum(double momentum);
  // Parameters without a gradient are skipped, as in torch.optim.SGD.
  void step(double lr);

 private:
  std::vector<torch::Tensor> params_, bufs_;
  double momentum_, weightDecay_;
  bool nesterov_;
};

}  // namespace cmi
