#include "sgd.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

namespace cmi {
namespace {

// p, g, b: same-layout dense float buffers of n values
template <bool kMomentum, bool kFirst, bool kNesterov>
void update(float* p, const float* g, float* b, int64_t n, float lr, float m, float wd) {
  at::parallel_for(0, n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float d = g[i] + wd * p[i];
      if (kMomentum) {
        const float bi = kFirst ? d : m * b[i] + d;
        b[i] = bi;
        d = kNesterov ? d + m * bi : bi;
      }
      p[i] -= lr * d;
    }
  });
}

bool sameDenseLayout(const torch::Tensor& a, const torch::Tensor& b) {
  return a.device().is_cpu() && b.device().is_cpu() && a.scalar_type() == torch::kFloat &&
         b.scalar_type() == torch::kFloat && a.is_non_overlapping_and_dense() && a.strides() == b.strides() &&
         a.sizes() == b.sizes() && a.storage_offset() == 0 && b.storage_offset() == 0;
}

}  // namespace

FusedSgd::FusedSgd(std::vector<torch::Tensor> params, double momentum, bool nesterov, double weightDecay)
    : params_(std::move(params)), bufs_(params_.size()), momentum_(momentum), weightDecay_(weightDecay),
      nesterov_(nesterov) {
  TORCH_CHECK(momentum >= 0 && weightDecay >= 0, "sgd: momentum and weight decay must be >= 0");
  TORCH_CHECK(!nesterov || momentum > 0, "nesterov needs momentum > 0");
}

void FusedSgd::setMomentum(double momentum) {
  TORCH_CHECK(momentum >= 0 && momentum < 1, "momentum must be in [0, 1), got ", momentum);
  TORCH_CHECK(!nesterov_ || momentum > 0, "nesterov needs momentum > 0");
  momentum_ = momentum;
}

void FusedSgd::step(double lr) {
  RECORD_FUNCTION("sgd::step", std::vector<c10::IValue>());
  torch::NoGradGuard noGrad;
  const bool mom = momentum_ != 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    const auto& g = p.grad();
    if (!g.defined()) continue;
    auto& buf = bufs_[i];
    const bool first = !buf.defined();
    if (sameDenseLayout(p, g) && (first || sameDenseLayout(p, buf))) {
      if (mom && first) buf = torch::empty_like(p);
      float* pp = p.data_ptr<float>();
      const float* gp = g.data_ptr<float>();
      float* bp = mom ? buf.data_ptr<float>() : nullptr;
      const float flr = static_cast<float>(lr), m = static_cast<float>(momentum_), wd = static_cast<float>(weightDecay_);
      const int64_t n = p.numel();
      if (!mom)
        update<false, false, false>(pp, gp, bp, n, flr, m, wd);
      else if (first)
        nesterov_ ? update<true, true, true>(pp, gp, bp, n, flr, m, wd) : update<true, true, false>(pp, gp, bp, n, flr, m, wd);
      else
        nesterov_ ? update<true, false, true>(pp, gp, bp, n, flr, m, wd) : update<true, false, false>(pp, gp, bp, n, flr, m, wd);
      continue;
    }
    // other devices or layouts: torch.optim.SGD's own sequence of ops
    auto d = weightDecay_ != 0 ? g.add(p, weightDecay_) : g;
    if (mom) {
      if (first)
        buf = d.clone().detach();
      else
        buf.mul_(momentum_).add_(d);
      d = nesterov_ ? d.add(buf, momentum_) : buf;
    }
    p.add_(d, -lr);
  }
}

}  // namespace cmi
