#include "bnrelu.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cmath>
#include <cstring>

namespace cmi::bnrelu {

bool supported(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  auto plainFloat = [](const torch::Tensor& t) {
    return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous() &&
           !t.is_mkldnn();
  };
  if (!plainFloat(x) || !plainFloat(weight) || !plainFloat(bias) || (x.dim() != 4 && x.dim() != 2)) return false;
  const int64_t C = x.size(1);
  if (weight.dim() != 1 || bias.dim() != 1 || weight.size(0) != C || bias.size(0) != C) return false;
  return x.numel() / std::max<int64_t>(C, 1) > 1;
}

namespace {

// Reductions run in 4 independent float lanes (GCC/Clang vector extension: the compiler would
// not vectorise a float reduction without -ffast-math, nor a select inside one); each image
// plane's lanes are then added in double. 16 bytes: SSE is the baseline every x86-64 build has.
typedef float v4f __attribute__((vector_size(16)));
constexpr int kLanes = 4;

inline v4f load4(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline double laneSum(const v4f& v) {
  double s = 0;
  for (int l = 0; l < kLanes; ++l) s += v[l];
  return s;
}

// sums of (x - k) and (x - k)^2 over one plane; the shift k (a value of the channel) keeps
// E[d^2] - E[d]^2 free of cancellation when |mean| >> std
inline void shiftedSums(const float* x, int64_t n, float k, double& s, double& ss) {
  v4f a = {}, b = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const v4f d = load4(x + i) - k;
    a += d;
    b += d * d;
  }
  double sa = laneSum(a), sb = laneSum(b);
  for (; i < n; ++i) {
    const double d = x[i] - k;
    sa += d;
    sb += d * d;
  }
  s += sa;
  ss += sb;
}

// g = dy where the forward's relu passed (scale*x + shift > 0), else 0: sums of g and g*(x - mean)
inline void gradSums(const float* x, const float* dy, int64_t n, float scale, float shift, float mean, double& sg,
                     double& sgx) {
  v4f a = {}, b = {};
  const v4f zero = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const v4f v = load4(x + i);
    const v4f g = v * scale + shift > 0.f ? load4(dy + i) : zero;
    a += g;
    b += g * (v - mean);
  }
  double sa = laneSum(a), sb = laneSum(b);
  for (; i < n; ++i) {
    const float v = x[i];
    const float g = v * scale + shift > 0.f ? dy[i] : 0.f;
    sa += g;
    sb += static_cast<double>(g) * (v - mean);
  }
  sg += sa;
  sgx += sb;
}

struct BnReluFn : public torch::autograd::Function<BnReluFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, torch::Tensor runningMean,
                               torch::Tensor runningVar, double momentum, double eps) {
    RECORD_FUNCTION("bnrelu::forward", std::vector<c10::IValue>({x}));
    const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C), M = N * HW;
    auto y = torch::empty_like(x);
    auto opts = x.options();
    // per channel: batch mean, 1/sqrt(var + eps), and the affine map y = relu(scale * x + shift)
    auto mean = torch::empty({C}, opts), invstd = torch::empty({C}, opts), var = torch::empty({C}, opts);
    auto scale = torch::empty({C}, opts), shift = torch::empty({C}, opts);
    const float* xp = x.data_ptr<float>();
    const float *gamma = weight.data_ptr<float>(), *beta = bias.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    float *meanP = mean.data_ptr<float>(), *invstdP = invstd.data_ptr<float>(), *varP = var.data_ptr<float>();
    float *scaleP = scale.data_ptr<float>(), *shiftP = shift.data_ptr<float>();
    at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const float k = xp[c * HW];
        double s = 0, ss = 0;
        for (int64_t n = 0; n < N; ++n) shiftedSums(xp + (n * C + c) * HW, HW, k, s, ss);
        const double d = s / M, v = std::max(ss / M - d * d, 0.0);
        const double mu = k + d, is = 1.0 / std::sqrt(v + eps);
        const float sc = static_cast<float>(gamma[c] * is), sh = static_cast<float>(beta[c] - mu * gamma[c] * is);
        meanP[c] = static_cast<float>(mu), invstdP[c] = static_cast<float>(is), varP[c] = static_cast<float>(v);
        scaleP[c] = sc, shiftP[c] = sh;
        for (int64_t n = 0; n < N; ++n) {
          const float* xi = xp + (n * C + c) * HW;
          float* yi = yp + (n * C + c) * HW;
          for (int64_t i = 0; i < HW; ++i) yi[i] = std::max(xi[i] * sc + sh, 0.f);
        }
      }
    });
    // PyTorch's running-stats update: biased variance normalises, the unbiased one is tracked
    if (runningMean.defined()) runningMean.mul_(1 - momentum).add_(mean, momentum);
    if (runningVar.defined()) runningVar.mul_(1 - momentum).add_(var, momentum * M / (M - 1));
    ctx->save_for_backward({x, weight});
    ctx->saved_data["mean"] = mean;
    ctx->saved_data["invstd"] = invstd;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["shift"] = shift;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("bnrelu::backward", std::vector<c10::IValue>());
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1];
    auto dy = grads[0].contiguous();
    auto mean = ctx->saved_data["mean"].toTensor(), invstd = ctx->saved_data["invstd"].toTensor();
    auto scale = ctx->saved_data["scale"].toTensor(), shift = ctx->saved_data["shift"].toTensor();
    const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C), M = N * HW;
    auto dx = torch::empty_like(x);
    auto dgamma = torch::empty({C}, weight.options()), dbeta = torch::empty({C}, weight.options());
    const float *xp = x.data_ptr<float>(), *dyp = dy.data_ptr<float>(), *gamma = weight.data_ptr<float>();
    const float *meanP = mean.data_ptr<float>(), *invstdP = invstd.data_ptr<float>();
    const float *scaleP = scale.data_ptr<float>(), *shiftP = shift.data_ptr<float>();
    float *dxp = dx.data_ptr<float>(), *dgP = dgamma.data_ptr<float>(), *dbP = dbeta.data_ptr<float>();
    at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const float sc = scaleP[c], sh = shiftP[c], mu = meanP[c];
        double sg = 0, sgx = 0;
        for (int64_t n = 0; n < N; ++n) gradSums(xp + (n * C + c) * HW, dyp + (n * C + c) * HW, HW, sc, sh, mu, sg, sgx);
        const double is = invstdP[c];
        dbP[c] = static_cast<float>(sg);
        dgP[c] = static_cast<float>(sgx * is);
        // dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - mu) * invstd
        const double a = gamma[c] * is;
        const float fa = static_cast<float>(a), fb = static_cast<float>(-a * is * is * sgx / M),
                    fc = static_cast<float>(-a * sg / M);
        for (int64_t n = 0; n < N; ++n) {
          const int64_t off = (n * C + c) * HW;
          const float *xi = xp + off, *di = dyp + off;
          float* o = dxp + off;
          for (int64_t i = 0; i < HW; ++i) {
            const float v = xi[i], d = di[i];
            const float g = v * sc + sh > 0.f ? d : 0.f;
            o[i] = fa * g + fb * (v - mu) + fc;
          }
        }
      }
    });
    return {dx, dgamma, dbeta, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor train(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                    const torch::Tensor& runningMean, const torch::Tensor& runningVar, double momentum, double eps) {
  TORCH_CHECK(supported(x, weight, bias), "bnrelu: needs contiguous float [N,C,H,W] or [N,C] and affine [C] params");
  return BnReluFn::apply(x, weight, bias, runningMean, runningVar, momentum, eps);
}

}  // namespace cmi::bnrelu
