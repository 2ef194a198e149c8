#include "engine.h"
#include "smallconv.h"
#include "bnrelu.h"
#include "maxpool.h"
#include "winograd.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <set>
#include <stdexcept>
#include <thread>

namespace cmi {

namespace {

std::atomic<int> g_threads{0};

const char* opName(Op op) {
  switch (op) {
    case Op::Conv2d: return "Conv2d";
    case Op::BatchNorm: return "BatchNorm";
    case Op::Relu: return "Relu";
    case Op::MaxPool: return "MaxPool";
    case Op::AvgPool: return "AvgPool";
    case Op::GlobalAvgPool: return "GlobalAvgPool";
    case Op::Flatten: return "Flatten";
    case Op::Linear: return "Linear";
    case Op::Add: return "Add";
    case Op::Slice: return "Slice";
    case Op::Pad: return "Pad";
  }
  return "?";
}

std::string nodeLabel(const NodeSpec& n) { return "node '" + n.name + "' (" + opName(n.op) + ")"; }

// OpenBLAS (Debian's BLAS under libtorch) keeps its own pool whose idle threads spin for a while
// after each call, competing with the OpenMP threads that run the convolutions. Linear layers
// here are small, so BLAS runs single-threaded (the linalg stage applies the same policy).
// Looked up at run time so the addon does not link OpenBLAS.
void singleThreadedBlas() {
  using Fn = void (*)(int);
  static Fn fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (fn) fn(1);
}

// Developer aid: with CMIPRUNE_PROFILE=<prefix> every forward/trainStep writes libtorch's op-level
// trace (chrome://tracing JSON) to <prefix>.<n>.json.
std::unique_ptr<torch::autograd::profiler::RecordProfile> maybeProfile() {
  static const char* prefix = std::getenv("CMIPRUNE_PROFILE");
  static std::atomic<int> count{0};
  if (!prefix || !*prefix) return nullptr;
  return std::make_unique<torch::autograd::profiler::RecordProfile>(std::string(prefix) + "." +
                                                                     std::to_string(count++) + ".json");
}

std::string torchMessage(const std::exception& e) {
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

}  // namespace

void setEngineThreads(int n) {
  if (n < 1) throw std::invalid_argument("thread count must be >= 1, got " + std::to_string(n));
  g_threads = n;
  at::set_num_threads(n);
}

int getEngineThreads() {
  int n = g_threads.load();
  if (n > 0) return n;
  unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? static_cast<int>(hc) : 1;
}

namespace {
struct ComputeThread {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> jobs;
  ComputeThread() {
    std::thread([this] {
      for (;;) {
        std::function<void()> job;
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait(lock, [this] { return !jobs.empty(); });
          job = std::move(jobs.front());
          jobs.pop_front();
        }
        job();
      }
    }).detach();
  }
};
}  // namespace

void runOnComputeThread(const std::function<void()>& f) {
  static ComputeThread* ct = new ComputeThread();  // never destroyed: its thread lives as long as the process
  std::mutex doneMu;
  std::condition_variable doneCv;
  bool done = false;
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> lock(ct->mu);
    ct->jobs.push_back([&] {
      try {
        f();
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> l(doneMu);
      done = true;
      doneCv.notify_one();
    });
  }
  ct->cv.notify_one();
  std::unique_lock<std::mutex> lock(doneMu);
  doneCv.wait(lock, [&] { return done; });
  if (err) std::rethrow_exception(err);
}

void applyEngineThreads() {
  int n = getEngineThreads();
  if (at::get_num_threads() != n) at::set_num_threads(n);
}

Engine::Engine(ModelSpec spec) : spec_(std::move(spec)) {
  static bool blasOnce = (singleThreadedBlas(), true);
  (void)blasOnce;
  torch::NoGradGuard noGrad;
  if (spec_.inputs.size() != 1)
    throw std::invalid_argument("engine supports models with exactly one input, got " +
                                std::to_string(spec_.inputs.size()));
  for (auto& t : spec_.tensors) {
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    if (n != static_cast<int64_t>(t.data.size()))
      throw std::invalid_argument("tensor '" + t.name + "': data has " + std::to_string(t.data.size()) +
                                  " values, shape needs " + std::to_string(n));
    if (tensors_.count(t.name)) throw std::invalid_argument("tensor '" + t.name + "' given twice");
    auto cpu = torch::from_blob(t.data.data(), t.shape, torch::kFloat32).clone();
    tensors_[t.name] = cpu.to(engineDevice());
    t.data = std::vector<float>();  // weights now live in torch; don't keep a second copy
  }

  valueIndex_[spec_.inputs[0]] = 0;
  inputValue_ = 0;
  producer_.push_back(-1);
  std::set<std::string> trainableNames;
  for (size_t si = 0; si < spec_.nodes.size(); ++si) {
    const NodeSpec& n = spec_.nodes[si];
    Step st;
    st.spec = &n;
    size_t arity = n.op == Op::Add ? 2 : 1;
    if (n.inputs.size() != arity)
      throw std::invalid_argument(nodeLabel(n) + ": expects " + std::to_string(arity) + " input(s), got " +
                                  std::to_string(n.inputs.size()));
    for (auto& in : n.inputs) {
      auto it = valueIndex_.find(in);
      if (it == valueIndex_.end())
        throw std::invalid_argument(nodeLabel(n) + ": input '" + in +
                                    "' is not produced by an earlier node or the model input");
      st.in.push_back(it->second);
    }
    if (valueIndex_.count(n.output))
      throw std::invalid_argument(nodeLabel(n) + ": output '" + n.output + "' is already defined");
    st.out = static_cast<int>(producer_.size());
    valueIndex_[n.output] = st.out;
    producer_.push_back(static_cast<int>(si));

    auto param = [&](const char* slot, bool required) -> torch::Tensor {
      auto it = n.params.find(slot);
      if (it == n.params.end()) {
        if (required) throw std::invalid_argument(nodeLabel(n) + ": missing param '" + slot + "'");
        return torch::Tensor();
      }
      auto t = tensors_.find(it->second);
      if (t == tensors_.end())
        throw std::invalid_argument(nodeLabel(n) + ": param '" + slot + "' refers to unknown tensor '" +
                                    it->second + "'");
      if (std::string(slot) == "weight" || std::string(slot) == "bias") trainableNames.insert(it->second);
      return t->second;
    };
    switch (n.op) {
      case Op::Conv2d:
      case Op::Linear:
        st.w = param("weight", true);
        st.b = param("bias", false);
        break;
      case Op::BatchNorm:
        st.w = param("weight", true);
        st.b = param("bias", true);
        st.mean = param("runningMean", true);
        st.var = param("runningVar", true);
        break;
      case Op::Slice: {
        size_t k = n.axes.size();
        if (k == 0 || n.starts.size() != k || n.ends.size() != k || n.steps.size() != k)
          throw std::invalid_argument(nodeLabel(n) + ": axes, starts, ends and steps must have one length >= 1");
        for (size_t i = 0; i < k; ++i)
          if (n.axes[i] < 1 || n.steps[i] < 1 || n.starts[i] < 0 || n.ends[i] <= n.starts[i])
            throw std::invalid_argument(nodeLabel(n) + ": entry " + std::to_string(i) +
                                        " needs axis >= 1, step >= 1 and 0 <= start < end");
        break;
      }
      case Op::Pad:
        if (n.pads.size() != 8)
          throw std::invalid_argument(nodeLabel(n) + ": pads must have 8 entries (4-d input), got " +
                                      std::to_string(n.pads.size()));
        for (auto p : n.pads)
          if (p < 0) throw std::invalid_argument(nodeLabel(n) + ": pads must be >= 0");
        if (!std::isfinite(n.padValue)) throw std::invalid_argument(nodeLabel(n) + ": value must be finite");
        break;
      default:
        break;
    }
    steps_.push_back(std::move(st));
  }
  for (auto& o : spec_.outputs) {
    auto it = valueIndex_.find(o);
    if (it == valueIndex_.end()) throw std::invalid_argument("model output '" + o + "' is not produced by any node");
    outputValues_.push_back(it->second);
  }

  // Conv weights in the activation layout so mkldnn does not reorder them on every call.
  if (spec_.channelsLast) {
    for (auto& st : steps_)
      if (st.spec->op == Op::Conv2d) st.w.set_data(st.w.contiguous(torch::MemoryFormat::ChannelsLast));
  }
  blocked_ = spec_.blockedInference && at::hasMKLDNN() && engineDevice().is_cpu();
  wStore_.assign(steps_.size(), winograd::TrainStore());
  foldInto_.assign(steps_.size(), -1);
  reluAfter_.assign(steps_.size(), -1);
  std::vector<int> consumers(producer_.size(), 0), lastConsumer(producer_.size(), -1);
  for (size_t si = 0; si < steps_.size(); ++si)
    for (int v : steps_[si].in) consumers[v]++, lastConsumer[v] = static_cast<int>(si);
  for (size_t si = 0; si < steps_.size(); ++si) {
    int v = steps_[si].out, c = lastConsumer[v];
    bool isOutput = std::find(outputValues_.begin(), outputValues_.end(), v) != outputValues_.end();
    if (steps_[si].spec->op == Op::Conv2d && consumers[v] == 1 && !isOutput &&
        steps_[c].spec->op == Op::BatchNorm)
      foldInto_[si] = c;
    if (steps_[si].spec->op == Op::BatchNorm && consumers[v] == 1 && !isOutput && steps_[c].spec->op == Op::Relu)
      reluAfter_[si] = c;
  }
  for (auto& name : trainableNames) {
    auto& t = tensors_[name];
    t.set_requires_grad(true);
    trainable_.push_back(t);
  }
}

torch::Tensor Engine::toLayout(const torch::Tensor& t) const {
  if (spec_.channelsLast && t.dim() == 4) return t.contiguous(torch::MemoryFormat::ChannelsLast);
  return t;
}

namespace {
torch::Tensor toBlocked(const torch::Tensor& t) { return t.is_mkldnn() ? t : t.contiguous().to_mkldnn(); }
torch::Tensor toDense(const torch::Tensor& t) { return t.is_mkldnn() ? t.to_dense() : t; }
}  // namespace

const Engine::Packed& Engine::packed(size_t si, bool folded, ConvAlgo algo, const torch::Tensor& x) {
  if (packed_.size() != steps_.size()) packed_.assign(steps_.size(), Packed());
  Packed& p = packed_[si];
  const Step& st = steps_[si];
  const NodeSpec& n = *st.spec;
  auto pack = [&](const torch::Tensor& w) {
    return torch::mkldnn_reorder_conv2d_weight(w.contiguous().to_mkldnn(), n.padding, n.stride, n.dilation, n.groups);
  };
  // BN(conv(x)) = conv(x; w*s) + (b - mean)*s + beta, s = gamma / sqrt(var + eps)
  auto foldScale = [&] {
    const Step& bn = steps_[foldInto_[si]];
    return bn.w.detach() / (bn.var + bn.spec->eps).sqrt();
  };
  if (folded && !p.foldedB.defined()) {
    const Step& bn = steps_[foldInto_[si]];
    auto b = st.b.defined() ? st.b.detach() : torch::zeros_like(bn.mean);
    p.foldedB = (b - bn.mean) * foldScale() + bn.b.detach();
  }
  if (algo == ConvAlgo::Small && (p.smallH != x.size(2) || p.smallW != x.size(3))) {
    p.small = p.foldedSmall = torch::Tensor();
    p.smallH = x.size(2), p.smallW = x.size(3);
  }
  torch::Tensor& slot = algo == ConvAlgo::Winograd ? (folded ? p.foldedWino : p.wino)
                        : algo == ConvAlgo::Small  ? (folded ? p.foldedSmall : p.small)
                                                   : (folded ? p.foldedW : p.w);
  if (!slot.defined()) {
    auto w = st.w.detach();
    if (folded) w = w * foldScale().view({-1, 1, 1, 1});
    slot = algo == ConvAlgo::Winograd ? winograd::transformWeight(w)
           : algo == ConvAlgo::Small  ? smallconv::expandWeight(w, x.size(2), x.size(3), n.stride, n.padding, n.dilation)
                                      : pack(w);
  }
  return p;
}

// `blocked`: 4-d activations stay in oneDNN tensors between the ops that support them; anything
// else (Flatten, Linear, BN over [N,C]) gets a dense copy.
std::vector<torch::Tensor> Engine::run(const torch::Tensor& xIn, const std::vector<int>& want, bool training,
                                       bool blocked) {
  const size_t nv = producer_.size();
  std::vector<int> lastUse(nv, -1), uses(nv, 0);
  std::vector<bool> wanted(nv, false);
  for (int v : want) wanted[v] = true;
  for (size_t si = 0; si < steps_.size(); ++si)
    for (int v : steps_[si].in) {
      lastUse[v] = static_cast<int>(si);
      uses[v]++;
    }

  // BN steps folded into their conv for this call (never when the conv output itself is wanted)
  std::vector<bool> folded(steps_.size(), false);
  if (blocked && !training)
    for (size_t si = 0; si < steps_.size(); ++si)
      if (foldInto_[si] >= 0 && !wanted[steps_[si].out]) folded[foldInto_[si]] = true;

  // Training: a BatchNorm whose only consumer is a ReLU runs as one op (native/bnrelu.h) and the
  // ReLU passes its input on; never when the BN output itself is wanted.
  std::vector<bool> reluDone(steps_.size(), false);
  if (training && spec_.fuseBnRelu)
    for (size_t si = 0; si < steps_.size(); ++si)
      if (reluAfter_[si] >= 0 && !wanted[steps_[si].out]) reluDone[reluAfter_[si]] = true;

  std::vector<torch::Tensor> vals(nv);
  vals[inputValue_] = blocked ? xIn.to(engineDevice()) : toLayout(xIn.to(engineDevice()));
  for (size_t si = 0; si < steps_.size(); ++si) {
    const Step& st = steps_[si];
    const NodeSpec& n = *st.spec;
    if (!vals[st.in[0]].defined()) throw std::logic_error(nodeLabel(n) + ": input value was released early");
    torch::Tensor y;
    try {
      torch::Tensor x = vals[st.in[0]];
      // Blocked: 4-d ops take either layout, so a value stays in the one its producer gave it;
      // convolutions pick theirs below. PyTorch's include-pad divisor differs from oneDNN's where
      // a ceil-mode window overhangs.
      if (blocked && (x.dim() != 4 || n.op == Op::Flatten || n.op == Op::Linear || n.op == Op::Slice ||
                      n.op == Op::Pad ||
                      (n.op == Op::AvgPool && n.ceilMode && n.countIncludePad)))
        x = toDense(x);
      switch (n.op) {
        case Op::Conv2d: {
          // libtorch's own convolution unless a faster path is measured for this shape
          ConvAlgo algo = ConvAlgo::OneDnn;
          if (spec_.winograd && !spec_.channelsLast &&
              winograd::preferred(x, st.w, n.stride, n.padding, n.dilation, n.groups, blocked))
            algo = ConvAlgo::Winograd;
          else if (spec_.smallConv && !spec_.channelsLast &&
                   smallconv::preferred(x, st.w, n.stride, n.padding, n.dilation, n.groups))
            algo = ConvAlgo::Small;
          auto outHW = [&] {
            return std::pair<int64_t, int64_t>(
                smallconv::outSize(x.size(2), n.kernel[0], n.stride[0], n.padding[0], n.dilation[0]),
                smallconv::outSize(x.size(3), n.kernel[1], n.stride[1], n.padding[1], n.dilation[1]));
          };
          if (blocked) {
            bool fold = foldInto_[si] >= 0 && folded[foldInto_[si]];
            const Packed& p = packed(si, fold, algo, x);
            auto b = fold ? p.foldedB : st.b;
            if (algo == ConvAlgo::Winograd) {
              y = winograd::forward(toDense(x).contiguous(), fold ? p.foldedWino : p.wino, b);
            } else if (algo == ConvAlgo::Small) {
              auto [OH, OW] = outHW();
              y = smallconv::forward(toDense(x), fold ? p.foldedSmall : p.small, b, st.w.size(0), OH, OW);
            } else {
              y = torch::mkldnn_convolution(toBlocked(x), fold ? p.foldedW : p.w, b, n.padding, n.stride, n.dilation,
                                            n.groups);
            }
          } else if (algo == ConvAlgo::Winograd) {
            y = winograd::conv3x3(x, st.w, st.b, training ? &wStore_[si] : nullptr);
          } else if (algo == ConvAlgo::Small) {
            auto wx = smallconv::expandWeight(st.w, x.size(2), x.size(3), n.stride, n.padding, n.dilation);
            auto [OH, OW] = outHW();
            y = smallconv::forward(x, wx, st.b, st.w.size(0), OH, OW);
          } else {
            y = torch::conv2d(x, st.w, st.b, n.stride, n.padding, n.dilation, n.groups);
          }
          break;
        }
        case Op::BatchNorm:
          if (folded[si])
            y = x;
          else if (reluAfter_[si] >= 0 && reluDone[reluAfter_[si]] && bnrelu::supported(x, st.w, st.b))
            y = bnrelu::train(x, st.w, st.b, st.mean, st.var, n.momentum, n.eps);
          else {
            if (reluAfter_[si] >= 0) reluDone[reluAfter_[si]] = false;
            y = torch::batch_norm(x, st.w, st.b, st.mean, st.var, training, n.momentum, n.eps, false);
          }
          break;
        case Op::Relu: {
          if (reluDone[si]) {
            y = x;
            break;
          }
          // In place only when nothing else sees the input: a single consumer, not returned, not
          // the caller's input, not a view (Flatten, Slice) and not a Relu output (its backward needs it).
          int v = st.in[0], p = producer_[v];
          bool inplace = uses[v] == 1 && !wanted[v] && p >= 0 && steps_[p].spec->op != Op::Flatten &&
                         steps_[p].spec->op != Op::Slice && steps_[p].spec->op != Op::Relu;
          y = inplace && x.is_same(vals[v]) ? torch::relu_(vals[v]) : torch::relu(x);
          break;
        }
        case Op::MaxPool:
          y = spec_.fastMaxPool && maxpool::eligible(x, n.kernel, n.stride, n.padding, n.ceilMode)
                  ? maxpool::forward(x, n.kernel[0], n.kernel[1])
                  : torch::max_pool2d(x, n.kernel, n.stride, n.padding, {1, 1}, n.ceilMode);
          break;
        case Op::AvgPool:
          y = torch::avg_pool2d(x, n.kernel, n.stride, n.padding, n.ceilMode, n.countIncludePad);
          break;
        case Op::GlobalAvgPool:
          y = torch::adaptive_avg_pool2d(x, {1, 1});
          break;
        case Op::Flatten: {
          int64_t outer = 1;
          for (int64_t d = 0; d < n.axis; ++d) outer *= x.size(d);
          y = x.reshape({outer, -1});
          break;
        }
        case Op::Linear:
          y = torch::linear(x, st.w, st.b);
          break;
        case Op::Add: {
          torch::Tensor x2 = vals[st.in[1]];
          if (!x2.defined()) throw std::logic_error("second input value was released early");
          if (blocked) x2 = x.is_mkldnn() ? toBlocked(x2) : toDense(x2);
          y = torch::add(x, x2);
          break;
        }
        case Op::Slice: {
          // strided views, then one dense copy in the input's memory format (no aliasing of the input)
          y = x;
          for (size_t i = 0; i < n.axes.size(); ++i) y = y.slice(n.axes[i], n.starts[i], n.ends[i], n.steps[i]);
          y = y.contiguous(x.suggest_memory_format());
          break;
        }
        case Op::Pad: {
          // libtorch lists pads last dim first: [W_begin, W_end, H_begin, H_end, C_begin, C_end, ...]
          const int64_t r = static_cast<int64_t>(n.pads.size() / 2);
          if (x.dim() != r)
            throw std::invalid_argument("expects a " + std::to_string(r) + "-d input, got " + std::to_string(x.dim()) + "-d");
          std::vector<int64_t> pad;
          for (int64_t d = r - 1; d >= 0; --d) pad.push_back(n.pads[d]), pad.push_back(n.pads[d + r]);
          y = torch::constant_pad_nd(x, pad, n.padValue);
          if (x.suggest_memory_format() == torch::MemoryFormat::ChannelsLast)
            y = y.contiguous(torch::MemoryFormat::ChannelsLast);
          break;
        }
      }
    } catch (const std::exception& e) {
      throw std::runtime_error(nodeLabel(n) + ": " + torchMessage(e));
    }
    vals[st.out] = std::move(y);
    for (int v : st.in)
      if (lastUse[v] == static_cast<int>(si) && !wanted[v]) vals[v] = torch::Tensor();
  }
  std::vector<torch::Tensor> out;
  out.reserve(want.size());
  for (int v : want) out.push_back(toDense(vals[v]));
  return out;
}

std::vector<torch::Tensor> Engine::forward(const torch::Tensor& x, const std::vector<std::string>& want) {
  std::vector<int> idx;
  for (auto& w : want) {
    auto it = valueIndex_.find(w);
    if (it == valueIndex_.end()) throw std::invalid_argument("unknown value name '" + w + "'");
    idx.push_back(it->second);
  }
  applyEngineThreads();
  auto profile = maybeProfile();
  c10::InferenceMode guard;
  auto res = run(x, idx, false, blocked_);
  // Hand out dense standard-layout tensors that never share storage (Flatten outputs are views,
  // the same value may be requested twice), since the caller may expose them zero-copy.
  std::set<const void*> seen;
  for (auto& t : res) {
    t = t.contiguous();
    const void* p = t.storage().data();
    if (seen.count(p)) t = t.clone();
    seen.insert(t.storage().data());
  }
  return res;
}

void Engine::configureOptimizer(double momentum, bool nesterov, double weightDecay) {
  if (trainable_.empty()) throw std::invalid_argument("model has no trainable tensors");
  if (nesterov && momentum <= 0) throw std::invalid_argument("nesterov needs momentum > 0");
  sgd_.reset();
  optimizer_.reset();
  nesterov_ = nesterov;
  if (spec_.fusedSgd) {
    sgd_ = std::make_unique<FusedSgd>(trainable_, momentum, nesterov, weightDecay);
    return;
  }
  torch::optim::SGDOptions opts(0.0);
  opts.momentum(momentum).nesterov(nesterov).weight_decay(weightDecay).dampening(0.0);
  optimizer_ = std::make_unique<torch::optim::SGD>(trainable_, opts);
}

TrainResult Engine::trainStep(const torch::Tensor& x, const torch::Tensor& labels, double lr, double momentum,
                              const DistillTarget* distill) {
  if (!optimizer_ && !sgd_) throw std::logic_error("configureOptimizer must be called before trainStep");
  // Soft targets are checked before the forward pass, which already updates BN running statistics.
  if (distill) {
    const auto& t = distill->teacher;
    if (!(distill->temperature > 0) || !std::isfinite(distill->temperature))
      throw std::invalid_argument("distillation temperature must be a finite number > 0, got " +
                                  std::to_string(distill->temperature));
    if (!(distill->weight >= 0 && distill->weight <= 1))
      throw std::invalid_argument("distillation weight must be in [0, 1], got " + std::to_string(distill->weight));
    if (!t.defined() || t.dim() != 2 || x.dim() < 1 || t.size(0) != x.size(0))
      throw std::invalid_argument("distillation needs teacher logits [" + std::to_string(x.dim() ? x.size(0) : 0) +
                                  ", classes], got " + (t.defined() ? c10::str(t.sizes()) : std::string("none")));
    if (!outputValues_.empty()) {
      int p = producer_[outputValues_[0]];
      if (p >= 0 && steps_[p].spec->op == Op::Linear && t.size(1) != steps_[p].w.size(0))
        throw std::invalid_argument("distillation: teacher logits have " + std::to_string(t.size(1)) +
                                    " classes, the model's output '" + spec_.outputs[0] + "' has " +
                                    std::to_string(steps_[p].w.size(0)));
    }
  }
  if (momentum >= 0) {
    if (momentum >= 1) throw std::invalid_argument("momentum must be in [0, 1), got " + std::to_string(momentum));
    if (nesterov_ && momentum <= 0) throw std::invalid_argument("nesterov needs momentum > 0");
    if (sgd_)
      sgd_->setMomentum(momentum);
    else
      for (auto& g : optimizer_->param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).momentum(momentum);
  }
  if (outputValues_.empty()) throw std::invalid_argument("model has no outputs");
  applyEngineThreads();
  auto profile = maybeProfile();
  torch::AutoGradMode grad(true);
  packed_.clear();  // weights and BN stats are about to change
  auto logits = run(x, {outputValues_[0]}, true, false)[0];
  if (logits.dim() != 2)
    throw std::invalid_argument("trainStep needs a [N, classes] output, got " + std::to_string(logits.dim()) +
                                "-d output '" + spec_.outputs[0] + "'");
  auto target = labels.to(engineDevice(), torch::kLong);
  namespace F = torch::nn::functional;
  // a term with weight 0 is left out rather than multiplied by 0 (which would not cancel a NaN/inf)
  const double w = distill ? distill->weight : 0;
  torch::Tensor loss;
  if (w < 1) {
    try {
      loss = F::cross_entropy(logits, target);
    } catch (const std::exception& e) {
      throw std::runtime_error("cross-entropy: " + torchMessage(e));
    }
  }
  if (w > 0) {
    const double T = distill->temperature;
    if (distill->teacher.sizes() != logits.sizes())
      throw std::invalid_argument("distillation: teacher logits " + c10::str(distill->teacher.sizes()) +
                                  " do not match the model's output " + c10::str(logits.sizes()));
    torch::Tensor soft;
    try {
      // KL(p_teacher || p_student) on temperature-softened distributions, both given as log-probabilities
      auto logStudent = torch::log_softmax(logits / T, 1);
      auto logTeacher = torch::log_softmax(distill->teacher.to(engineDevice(), torch::kFloat32) / T, 1);
      soft = F::kl_div(logStudent, logTeacher, F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true)) *
             (T * T);
    } catch (const std::exception& e) {
      throw std::runtime_error("distillation loss: " + torchMessage(e));
    }
    loss = w == 1 ? soft : loss * (1 - w) + soft * w;
  }
  // Dropping the gradients lets backward write fresh ones instead of zero-fill + accumulate.
  for (auto& t : trainable_) t.mutable_grad() = torch::Tensor();
  loss.backward();
  if (sgd_) {
    sgd_->step(lr);
  } else {
    for (auto& g : optimizer_->param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
    optimizer_->step();
  }
  torch::NoGradGuard noGrad;
  int64_t correct = (logits.argmax(1) == target).sum().item<int64_t>();
  return {loss.item<double>(), correct};
}

void Engine::batchNormStatsStep(const torch::Tensor& x) {
  if (outputValues_.empty()) throw std::invalid_argument("model has no outputs");
  applyEngineThreads();
  auto profile = maybeProfile();
  // No graph is recorded: the Winograd and BN+ReLU autograd Functions compute their forwards as under
  // autograd (same arithmetic; what they save for backward is dropped with the unused node) and max
  // pooling takes its inference kernel (same values, no window positions kept).
  torch::NoGradGuard noGrad;
  packed_.clear();  // BN stats are about to change (blocked inference folds them into conv weights)
  // trainStep's request, so the same BNs are fused with their ReLUs
  run(x, {outputValues_[0]}, true, false);
}

std::vector<std::string> Engine::tensorNames() const {
  std::vector<std::string> names;
  for (auto& kv : tensors_) names.push_back(kv.first);
  return names;
}

torch::Tensor Engine::readTensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw std::invalid_argument("unknown tensor '" + name + "'");
  torch::NoGradGuard noGrad;
  return it->second.detach().to(torch::kCPU).contiguous();
}

void Engine::writeTensor(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw std::invalid_argument("unknown tensor '" + name + "'");
  auto& t = it->second;
  if (t.sizes().vec() != shape)
    throw std::invalid_argument("tensor '" + name + "': shape " + c10::str(c10::IntArrayRef(shape)) +
                                " does not match the model's " + c10::str(t.sizes()));
  torch::NoGradGuard noGrad;
  packed_.clear();
  // copy_ is synchronous on CPU and converts to the tensor's own layout.
  t.copy_(torch::from_blob(const_cast<float*>(data), shape, torch::kFloat32));
}

}  // namespace cmi
