// A generic interpreter of the cmiprune model IR over libtorch's functional ops.
// Torch-only (no N-API here) so it can be driven from tests or other front ends.
#pragma once
#include <torch/torch.h>

#include "sgd.h"
#include "winograd.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cmi {

enum class Op { Conv2d, BatchNorm, Relu, MaxPool, AvgPool, GlobalAvgPool, Flatten, Linear, Add, Slice, Pad };

// The parsed IR, independent of how the front end delivered it.
struct NodeSpec {
  std::string name;
  Op op;
  std::vector<std::string> inputs;
  std::string output;
  std::vector<int64_t> kernel, stride, padding, dilation;
  int64_t groups = 1;
  int64_t axis = 1;
  double eps = 1e-5, momentum = 0.1;
  bool ceilMode = false, countIncludePad = true;
  // Slice: per entry, x.slice(axes[i], starts[i], ends[i], steps[i]) (steps >= 1, 0 <= start < end)
  std::vector<int64_t> axes, starts, ends, steps;
  // Pad (constant mode): ONNX order [x1_begin, x2_begin, ..., x1_end, x2_end, ...], all >= 0
  std::vector<int64_t> pads;
  double padValue = 0;
  // slot ("weight", "bias", "runningMean", "runningVar") -> tensor name
  std::map<std::string, std::string> params;
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

struct ModelSpec {
  std::vector<std::string> inputs;  // exactly one supported
  std::vector<std::string> outputs;
  std::vector<NodeSpec> nodes;
  std::vector<TensorSpec> tensors;
  // Switches: declared once, with their defaults and purposes, in src/engine/switches.ts; the
  // addon requires every one of them in the spec (addon.cc), so these initialisers are never used.
  bool channelsLast = false;
  bool blockedInference = false;  // BN folded into conv, oneDNN blocked layout, prepacked weights
  bool winograd = false;          // native/winograd.h
  bool smallConv = false;         // native/smallconv.h
  bool fusedSgd = false;          // native/sgd.h
  bool fuseBnRelu = false;        // native/bnrelu.h
  bool fastMaxPool = false;       // native/maxpool.h
};

// The one place that decides where tensors live; CPU-only for now.
inline torch::Device engineDevice() { return torch::Device(torch::kCPU); }

// Intra-op thread count for every engine call; applied per calling thread because
// OpenMP's thread count is a per-thread setting and async work runs on libuv's pool.
void setEngineThreads(int n);
int getEngineThreads();
void applyEngineThreads();

// Runs f on the one thread that does all of the engine's compute and waits for it, rethrowing
// what f throws. libgomp keeps a separate worker team per calling thread, and libuv hands
// successive calls to any of its pool threads: the idle teams' spinning workers then compete for
// the cores with the running one (measured 5-20% slower training steps).
void runOnComputeThread(const std::function<void()>& f);

struct TrainResult {
  double loss;
  int64_t correct;
};

// Knowledge distillation's soft targets for one training step (Hinton et al. 2015):
// loss = (1 - weight) * CE(logits, labels) + weight * T^2 * KL(softmax(teacher / T) || softmax(logits / T)),
// the KL averaged over the batch (torch's kl_div(reduction='batchmean')).
struct DistillTarget {
  torch::Tensor teacher;  // [N, classes] teacher logits, float32
  double temperature = 1;  // T > 0
  double weight = 0;       // in [0, 1]
};

class Engine {
 public:
  explicit Engine(ModelSpec spec);

  // Eval mode, no autograd. Returns the values named in `want` (model outputs and taps),
  // each contiguous, row-major and not sharing storage with another returned tensor.
  std::vector<torch::Tensor> forward(const torch::Tensor& x, const std::vector<std::string>& want);

  void configureOptimizer(double momentum, bool nesterov, double weightDecay);
  // Train mode (BN batch stats, running stats updated), cross-entropy on outputs[0], one SGD step.
  // `momentum` >= 0 replaces the optimizer's momentum from this step on (one-cycle schedules); < 0 keeps it.
  // `distill` (optional): the loss mixes in the teacher's soft targets (DistillTarget); the reported
  // loss is the mixed one, `correct` stays top-1 against `labels`.
  TrainResult trainStep(const torch::Tensor& x, const torch::Tensor& labels, double lr, double momentum = -1,
                        const DistillTarget* distill = nullptr);

  // Train-mode forward without autograd and nothing else: every BatchNorm normalises with its batch
  // statistics and updates its running statistics (PyTorch's momentum rule); no loss, no backward,
  // no optimizer (none needs configuring), weights untouched. The forward is trainStep's (same
  // kernels, same BN+ReLU fusion: native/bnrelu.h's op computes the same without a graph), so the
  // running statistics come out as trainStep's would. For BatchNorm re-estimation.
  void batchNormStatsStep(const torch::Tensor& x);

  std::vector<std::string> tensorNames() const;
  // Contiguous copy in standard layout.
  torch::Tensor readTensor(const std::string& name) const;
  void writeTensor(const std::string& name, const std::vector<int64_t>& shape, const float* data);
  bool hasValue(const std::string& name) const { return valueIndex_.count(name) > 0; }

  // Guards against concurrent use: one call at a time per model.
  std::mutex mu;

 private:
  struct Step {
    const NodeSpec* spec;
    std::vector<int> in;
    int out;
    torch::Tensor w, b, mean, var;  // undefined when absent
  };
  std::vector<torch::Tensor> run(const torch::Tensor& x, const std::vector<int>& want, bool training, bool blocked);
  torch::Tensor toLayout(const torch::Tensor& t) const;

  ModelSpec spec_;
  std::map<std::string, int> valueIndex_;
  int inputValue_ = -1;
  std::vector<int> outputValues_;
  std::vector<Step> steps_;
  std::vector<int> producer_;  // value -> producing step (-1 for the model input)
  std::map<std::string, torch::Tensor> tensors_;
  std::vector<torch::Tensor> trainable_;
  std::unique_ptr<FusedSgd> sgd_;                 // spec_.fusedSgd
  std::unique_ptr<torch::optim::SGD> optimizer_;  // otherwise
  bool nesterov_ = false;
  // Blocked inference: per conv step, oneDNN-packed weights, plain and with the following
  // BatchNorm folded in; built on first use, dropped whenever weights or BN stats change.
  struct Packed {
    torch::Tensor w, foldedW, foldedB;
    torch::Tensor wino, foldedWino;  // Winograd-transformed weights [36, Cout, Cin]
    torch::Tensor small, foldedSmall;  // as one matrix for tiny images (native/smallconv.h)
    int64_t smallH = -1, smallW = -1;  // the image size that matrix was built for
  };
  enum class ConvAlgo { OneDnn, Winograd, Small };
  const Packed& packed(size_t si, bool folded, ConvAlgo algo, const torch::Tensor& x);
  bool blocked_ = false;
  std::vector<Packed> packed_;
  std::vector<winograd::TrainStore> wStore_;  // per Winograd conv step: its training buffers
  std::vector<int> foldInto_;
  std::vector<int> reluAfter_;  // per step: the ReLU step that alone consumes this BatchNorm's output, or -1  // per step: the BatchNorm step that alone consumes this conv's output, or -1
};

}  // namespace cmi
