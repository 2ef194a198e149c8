// N-API surface of the engine: parses the JS model spec, copies buffers in and out, and runs
// forward/trainStep/batchNormStatsStep on libuv's thread pool so the event loop keeps going.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <memory>

#include "alloc.h"
#include "engine.h"
#include "linalg.h"

namespace {

using cmi::Engine;

[[noreturn]] void throwJs(Napi::Env env, const std::string& msg) { throw Napi::Error::New(env, msg); }

std::string str(const Napi::Object& o, const char* key) {
  auto v = o.Get(key);
  if (!v.IsString()) throwJs(o.Env(), std::string("spec: '") + key + "' must be a string");
  return v.As<Napi::String>().Utf8Value();
}

std::vector<std::string> strList(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsArray()) throwJs(env, std::string("spec: ") + what + " must be an array of strings");
  auto a = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) throwJs(env, std::string("spec: ") + what + " must be an array of strings");
    out.push_back(e.As<Napi::String>().Utf8Value());
  }
  return out;
}

std::vector<int64_t> intList(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsArray()) throwJs(env, what + " must be an array of integers");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> out;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber()) throwJs(env, what + " must be an array of integers");
    double d = e.As<Napi::Number>().DoubleValue();
    if (d != static_cast<double>(static_cast<int64_t>(d))) throwJs(env, what + " must be an array of integers");
    out.push_back(static_cast<int64_t>(d));
  }
  return out;
}

cmi::Op parseOp(Napi::Env env, const std::string& s, const std::string& node) {
  static const std::map<std::string, cmi::Op> ops = {
      {"Conv2d", cmi::Op::Conv2d},   {"BatchNorm", cmi::Op::BatchNorm},
      {"Relu", cmi::Op::Relu},       {"MaxPool", cmi::Op::MaxPool},
      {"AvgPool", cmi::Op::AvgPool}, {"GlobalAvgPool", cmi::Op::GlobalAvgPool},
      {"Flatten", cmi::Op::Flatten}, {"Linear", cmi::Op::Linear},
      {"Add", cmi::Op::Add},         {"Slice", cmi::Op::Slice},
      {"Pad", cmi::Op::Pad}};
  auto it = ops.find(s);
  if (it == ops.end()) throwJs(env, "node '" + node + "': unsupported op '" + s + "'");
  return it->second;
}

cmi::NodeSpec parseNode(Napi::Env env, const Napi::Object& o) {
  cmi::NodeSpec n;
  n.name = str(o, "name");
  n.op = parseOp(env, str(o, "op"), n.name);
  n.inputs = strList(env, o.Get("inputs"), "node inputs");
  auto outs = strList(env, o.Get("outputs"), "node outputs");
  if (outs.size() != 1) throwJs(env, "node '" + n.name + "': expects exactly one output");
  n.output = outs[0];
  Napi::Value av = o.Get("attrs");
  Napi::Object attrs = av.IsObject() ? av.As<Napi::Object>() : Napi::Object::New(env);
  auto ints = [&](const char* key, std::vector<int64_t> dflt) {
    Napi::Value v = attrs.Get(key);
    if (v.IsUndefined()) return dflt;
    auto r = intList(env, v, "node '" + n.name + "': attr " + key);
    if (r.size() != 2) throwJs(env, "node '" + n.name + "': attr " + key + " must have 2 entries");
    return r;
  };
  auto num = [&](const char* key, double dflt) {
    Napi::Value v = attrs.Get(key);
    if (v.IsUndefined()) return dflt;
    if (!v.IsNumber()) throwJs(env, "node '" + n.name + "': attr " + key + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  auto flag = [&](const char* key, bool dflt) {
    Napi::Value v = attrs.Get(key);
    if (v.IsUndefined()) return dflt;
    if (!v.IsBoolean()) throwJs(env, "node '" + n.name + "': attr " + key + " must be a boolean");
    return v.As<Napi::Boolean>().Value();
  };
  if (n.op == cmi::Op::Conv2d || n.op == cmi::Op::MaxPool || n.op == cmi::Op::AvgPool) {
    n.kernel = ints("kernel", {});
    n.stride = ints("stride", n.kernel);
    n.padding = ints("padding", {0, 0});
    n.dilation = ints("dilation", {1, 1});
  }
  auto list = [&](const char* key) {
    Napi::Value v = attrs.Get(key);
    if (v.IsUndefined()) throwJs(env, "node '" + n.name + "': attr " + key + " is required");
    return intList(env, v, "node '" + n.name + "': attr " + key);
  };
  if (n.op == cmi::Op::Slice) {
    n.axes = list("axes");
    n.starts = list("starts");
    n.ends = list("ends");
    n.steps = list("steps");
  }
  if (n.op == cmi::Op::Pad) {
    n.pads = list("pads");
    Napi::Value mode = attrs.Get("mode");
    if (!mode.IsUndefined() && (!mode.IsString() || mode.As<Napi::String>().Utf8Value() != "constant"))
      throwJs(env, "node '" + n.name + "': attr mode must be 'constant'");
    n.padValue = num("value", 0);
  }
  n.groups = static_cast<int64_t>(num("groups", 1));
  n.axis = static_cast<int64_t>(num("axis", 1));
  n.eps = num("eps", 1e-5);
  n.momentum = num("momentum", 0.1);
  n.ceilMode = flag("ceilMode", false);
  n.countIncludePad = flag("countIncludePad", true);
  Napi::Value pv = o.Get("params");
  if (pv.IsObject()) {
    auto params = pv.As<Napi::Object>();
    auto keys = params.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      std::string slot = keys.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value t = params.Get(slot);
      if (t.IsUndefined()) continue;
      if (!t.IsString()) throwJs(env, "node '" + n.name + "': param '" + slot + "' must name a tensor");
      n.params[slot] = t.As<Napi::String>().Utf8Value();
    }
  }
  return n;
}

Napi::Float32Array f32(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throwJs(env, what + " must be a Float32Array");
  return v.As<Napi::Float32Array>();
}

// A JS {shape, data} object backed by the tensor's own memory; the ArrayBuffer keeps it alive.
Napi::Object exportTensor(Napi::Env env, const torch::Tensor& t, bool zeroCopy) {
  Napi::Object o = Napi::Object::New(env);
  Napi::Array shape = Napi::Array::New(env, t.dim());
  for (int64_t i = 0; i < t.dim(); ++i) shape.Set(static_cast<uint32_t>(i), Napi::Number::New(env, t.size(i)));
  size_t n = static_cast<size_t>(t.numel());
  Napi::Float32Array data;
  if (!zeroCopy || n == 0) {
    data = Napi::Float32Array::New(env, n);
    if (n) std::memcpy(data.Data(), t.data_ptr<float>(), n * sizeof(float));
  } else {
    auto* keep = new torch::Tensor(t);
    auto ab = Napi::ArrayBuffer::New(
        env, keep->data_ptr<float>(), n * sizeof(float), [](Napi::Env, void*, torch::Tensor* k) { delete k; }, keep);
    data = Napi::Float32Array::New(env, n, ab, 0);
  }
  o.Set("shape", shape);
  o.Set("data", data);
  return o;
}

// Copies JS input now: the JS buffer may move or be collected while the work is queued.
torch::Tensor importInput(Napi::Env env, Napi::Value dataV, Napi::Value shapeV) {
  auto data = f32(env, dataV, "input data");
  auto shape = intList(env, shapeV, "input shape");
  int64_t n = 1;
  for (auto d : shape) {
    if (d < 0) throwJs(env, "input shape has a negative dimension");
    n *= d;
  }
  if (n != static_cast<int64_t>(data.ElementLength()))
    throwJs(env, "input data has " + std::to_string(data.ElementLength()) + " values, shape needs " +
                     std::to_string(n));
  auto t = torch::empty(shape, torch::kFloat32);
  if (n) std::memcpy(t.data_ptr<float>(), data.Data(), n * sizeof(float));
  return t;
}

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Model",
                       {InstanceMethod("forward", &ModelWrap::Forward),
                        InstanceMethod("trainStep", &ModelWrap::TrainStep),
                        InstanceMethod("batchNormStatsStep", &ModelWrap::BatchNormStatsStep),
                        InstanceMethod("configureOptimizer", &ModelWrap::ConfigureOptimizer),
                        InstanceMethod("readTensors", &ModelWrap::ReadTensors),
                        InstanceMethod("writeTensors", &ModelWrap::WriteTensors),
                        InstanceMethod("dispose", &ModelWrap::Dispose),
                        InstanceAccessor("busy", &ModelWrap::Busy, nullptr)});
  }

  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throwJs(env, "Model(spec): spec must be an object");
    auto spec = info[0].As<Napi::Object>();
    cmi::ModelSpec ms;
    ms.inputs = strList(env, spec.Get("inputs"), "inputs");
    ms.outputs = strList(env, spec.Get("outputs"), "outputs");
    Napi::Value nodesV = spec.Get("nodes");
    if (!nodesV.IsArray()) throwJs(env, "spec: nodes must be an array");
    auto nodes = nodesV.As<Napi::Array>();
    for (uint32_t i = 0; i < nodes.Length(); ++i) {
      Napi::Value nv = nodes.Get(i);
      if (!nv.IsObject()) throwJs(env, "spec: nodes[" + std::to_string(i) + "] must be an object");
      ms.nodes.push_back(parseNode(env, nv.As<Napi::Object>()));
    }
    Napi::Value tv = spec.Get("tensors");
    if (!tv.IsObject()) throwJs(env, "spec: tensors must be an object");
    auto tensors = tv.As<Napi::Object>();
    auto keys = tensors.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      cmi::TensorSpec ts;
      ts.name = keys.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value t = tensors.Get(ts.name);
      if (!t.IsObject()) throwJs(env, "tensor '" + ts.name + "' must be {shape, data}");
      auto to = t.As<Napi::Object>();
      ts.shape = intList(env, to.Get("shape"), "tensor '" + ts.name + "' shape");
      auto d = f32(env, to.Get("data"), "tensor '" + ts.name + "' data");
      ts.data.assign(d.Data(), d.Data() + d.ElementLength());
      ms.tensors.push_back(std::move(ts));
    }
    // boolean switches, every one required: their defaults live in src/engine/switches.ts only
    auto flag = [&](const char* key, bool& field) {
      Napi::Value v = spec.Get(key);
      if (!v.IsBoolean()) throwJs(env, std::string("model spec: switch '") + key + "' must be a boolean (src/engine/switches.ts)");
      field = v.As<Napi::Boolean>().Value();
    };
    flag("channelsLast", ms.channelsLast);
    flag("blockedInference", ms.blockedInference);
    flag("winograd", ms.winograd);
    flag("smallConv", ms.smallConv);
    flag("fusedSgd", ms.fusedSgd);
    flag("fuseBnRelu", ms.fuseBnRelu);
    flag("fastMaxPool", ms.fastMaxPool);
    try {
      engine_ = std::make_shared<Engine>(std::move(ms));
    } catch (const std::exception& e) {
      throwJs(env, e.what());
    }
  }

  // Called on the JS thread when async work finishes.
  void release() { busy_ = false; }

 private:
  Engine& use(Napi::Env env, const char* what) {
    if (!engine_) throwJs(env, std::string(what) + ": model has been disposed");
    if (busy_)
      throwJs(env, std::string(what) + ": model is busy with a forward/trainStep/batchNormStatsStep; await it first");
    return *engine_;
  }

  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value TrainStep(const Napi::CallbackInfo& info);
  Napi::Value BatchNormStatsStep(const Napi::CallbackInfo& info);

  Napi::Value ConfigureOptimizer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& e = use(env, "configureOptimizer");
    if (!info[0].IsNumber() || !info[1].IsBoolean() || !info[2].IsNumber())
      throwJs(env, "configureOptimizer(momentum: number, nesterov: boolean, weightDecay: number)");
    try {
      e.configureOptimizer(info[0].As<Napi::Number>().DoubleValue(), info[1].As<Napi::Boolean>().Value(),
                           info[2].As<Napi::Number>().DoubleValue());
    } catch (const std::exception& ex) {
      throwJs(env, std::string("configureOptimizer: ") + ex.what());
    }
    return env.Undefined();
  }

  Napi::Value ReadTensors(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& e = use(env, "readTensors");
    std::vector<std::string> names =
        info[0].IsUndefined() ? e.tensorNames() : strList(env, info[0], "readTensors names");
    Napi::Object out = Napi::Object::New(env);
    for (auto& name : names) {
      try {
        out.Set(name, exportTensor(env, e.readTensor(name), false));
      } catch (const Napi::Error&) {
        throw;
      } catch (const std::exception& ex) {
        throwJs(env, std::string("readTensors: ") + ex.what());
      }
    }
    return out;
  }

  Napi::Value WriteTensors(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& e = use(env, "writeTensors");
    if (!info[0].IsObject()) throwJs(env, "writeTensors(tensors): tensors must be an object");
    auto obj = info[0].As<Napi::Object>();
    auto keys = obj.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      std::string name = keys.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value tv = obj.Get(name);
      if (!tv.IsObject()) throwJs(env, "writeTensors: tensor '" + name + "' must be {shape, data}");
      auto to = tv.As<Napi::Object>();
      auto shape = intList(env, to.Get("shape"), "writeTensors: tensor '" + name + "' shape");
      auto data = f32(env, to.Get("data"), "writeTensors: tensor '" + name + "' data");
      int64_t n = 1;
      for (auto d : shape) n *= d;
      if (n != static_cast<int64_t>(data.ElementLength()))
        throwJs(env, "writeTensors: tensor '" + name + "' has " + std::to_string(data.ElementLength()) +
                         " values, shape needs " + std::to_string(n));
      try {
        e.writeTensor(name, shape, data.Data());
      } catch (const std::exception& ex) {
        throwJs(env, std::string("writeTensors: ") + ex.what());
      }
    }
    return env.Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (busy_) throwJs(info.Env(), "dispose: model is busy with a forward/trainStep/batchNormStatsStep; await it first");
    engine_.reset();
    return info.Env().Undefined();
  }

  Napi::Value Busy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy_); }

  std::shared_ptr<Engine> engine_;
  bool busy_ = false;
};

// Base for promise-returning work on one model: pins the JS object and marks it busy.
class ModelWork : public Napi::AsyncWorker {
 public:
  ModelWork(Napi::Env env, Napi::Object self, ModelWrap* wrap, std::shared_ptr<Engine> engine)
      : Napi::AsyncWorker(env, "cmiprune:engine"),
        deferred_(Napi::Promise::Deferred::New(env)),
        self_(Napi::Persistent(self)),
        wrap_(wrap),
        engine_(std::move(engine)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    std::unique_lock<std::mutex> lock(engine_->mu, std::try_to_lock);
    if (!lock.owns_lock()) {
      SetError("model is in use by another call");
      return;
    }
    try {
      cmi::runOnComputeThread([this] { Run(*engine_); });
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  virtual void Run(Engine& e) = 0;
  void OnError(const Napi::Error& e) override {
    wrap_->release();
    deferred_.Reject(e.Value());
  }
  void OnOK() override {
    wrap_->release();
    Napi::HandleScope scope(Env());
    deferred_.Resolve(Result(Env()));
  }
  virtual Napi::Value Result(Napi::Env env) = 0;

  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference self_;
  ModelWrap* wrap_;
  std::shared_ptr<Engine> engine_;
};

class ForwardWork : public ModelWork {
 public:
  ForwardWork(Napi::Env env, Napi::Object self, ModelWrap* w, std::shared_ptr<Engine> e, torch::Tensor x,
              std::vector<std::string> want)
      : ModelWork(env, self, w, std::move(e)), x_(std::move(x)), want_(std::move(want)) {}

 protected:
  void Run(Engine& e) override {
    out_ = e.forward(x_, want_);
    x_ = torch::Tensor();
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Array arr = Napi::Array::New(env, out_.size());
    for (size_t i = 0; i < out_.size(); ++i) arr.Set(static_cast<uint32_t>(i), exportTensor(env, out_[i], true));
    return arr;
  }

 private:
  torch::Tensor x_;
  std::vector<std::string> want_;
  std::vector<torch::Tensor> out_;
};

class TrainWork : public ModelWork {
 public:
  TrainWork(Napi::Env env, Napi::Object self, ModelWrap* w, std::shared_ptr<Engine> e, torch::Tensor x,
            torch::Tensor labels, double lr, double momentum, std::unique_ptr<cmi::DistillTarget> distill)
      : ModelWork(env, self, w, std::move(e)),
        x_(std::move(x)),
        labels_(std::move(labels)),
        lr_(lr),
        momentum_(momentum),
        distill_(std::move(distill)) {}

 protected:
  void Run(Engine& e) override { res_ = e.trainStep(x_, labels_, lr_, momentum_, distill_.get()); }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", Napi::Number::New(env, res_.loss));
    o.Set("correct", Napi::Number::New(env, static_cast<double>(res_.correct)));
    return o;
  }

 private:
  torch::Tensor x_, labels_;
  double lr_, momentum_;
  std::unique_ptr<cmi::DistillTarget> distill_;  // null: plain cross-entropy
  cmi::TrainResult res_{};
};

class BnStatsWork : public ModelWork {
 public:
  BnStatsWork(Napi::Env env, Napi::Object self, ModelWrap* w, std::shared_ptr<Engine> e, torch::Tensor x)
      : ModelWork(env, self, w, std::move(e)), x_(std::move(x)) {}

 protected:
  void Run(Engine& e) override {
    e.batchNormStatsStep(x_);
    x_ = torch::Tensor();
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  torch::Tensor x_;
};

// forward(data: Float32Array, shape: number[], want: string[]) -> Promise<{shape, data}[]>
Napi::Value ModelWrap::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engine& e = use(env, "forward");
  auto x = importInput(env, info[0], info[1]);
  auto want = strList(env, info[2], "forward want");
  for (auto& w : want)
    if (!e.hasValue(w)) throwJs(env, "forward: unknown value name '" + w + "'");
  auto* work = new ForwardWork(env, info.This().As<Napi::Object>(), this, engine_, std::move(x), std::move(want));
  busy_ = true;
  work->Queue();
  return work->Promise();
}

// Optional soft targets of trainStep: {teacher: Float32Array [batch * classes], temperature > 0,
// weight in [0, 1]}; the teacher logits are copied now, like the input.
std::unique_ptr<cmi::DistillTarget> parseDistill(Napi::Env env, Napi::Value v, int64_t batch) {
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
    throwJs(env, "trainStep: distill must be an object {teacher: Float32Array, temperature: number, weight: number}");
  auto o = v.As<Napi::Object>();
  auto teacher = f32(env, o.Get("teacher"), "trainStep: distill.teacher");
  Napi::Value tv = o.Get("temperature"), wv = o.Get("weight");
  if (!tv.IsNumber()) throwJs(env, "trainStep: distill.temperature must be a number");
  if (!wv.IsNumber()) throwJs(env, "trainStep: distill.weight must be a number");
  auto d = std::make_unique<cmi::DistillTarget>();
  d->temperature = tv.As<Napi::Number>().DoubleValue();
  d->weight = wv.As<Napi::Number>().DoubleValue();
  if (!(d->temperature > 0) || !std::isfinite(d->temperature))
    throwJs(env, "trainStep: distill.temperature must be a finite number > 0, got " + std::to_string(d->temperature));
  if (!(d->weight >= 0 && d->weight <= 1))
    throwJs(env, "trainStep: distill.weight must be in [0, 1], got " + std::to_string(d->weight));
  const int64_t n = static_cast<int64_t>(teacher.ElementLength());
  if (batch < 1 || n == 0 || n % batch != 0)
    throwJs(env, "trainStep: distill.teacher has " + std::to_string(n) + " values, need batch (" +
                     std::to_string(batch) + ") x classes");
  d->teacher = torch::empty({batch, n / batch}, torch::kFloat32);
  std::memcpy(d->teacher.data_ptr<float>(), teacher.Data(), n * sizeof(float));
  return d;
}

// trainStep(data: Float32Array, shape: number[], labels: Int32Array, lr: number, momentum?: number,
//           distill?: {teacher, temperature, weight}) -> Promise<{loss, correct}>; momentum, when given,
//   replaces the optimizer's from this step on; distill mixes in a teacher's soft targets (engine.h)
Napi::Value ModelWrap::TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engine& e = use(env, "trainStep");
  (void)e;
  auto x = importInput(env, info[0], info[1]);
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throwJs(env, "trainStep: labels must be an Int32Array");
  auto labels = info[2].As<Napi::Int32Array>();
  if (x.dim() < 1 || static_cast<int64_t>(labels.ElementLength()) != x.size(0))
    throwJs(env, "trainStep: got " + std::to_string(labels.ElementLength()) + " labels for a batch of " +
                     std::to_string(x.dim() ? x.size(0) : 0));
  if (!info[3].IsNumber()) throwJs(env, "trainStep: lr must be a number");
  double momentum = -1;
  if (info.Length() > 4 && !info[4].IsUndefined()) {
    if (!info[4].IsNumber()) throwJs(env, "trainStep: momentum must be a number");
    momentum = info[4].As<Napi::Number>().DoubleValue();
    if (!(momentum >= 0 && momentum < 1)) throwJs(env, "trainStep: momentum must be in [0, 1), got " + std::to_string(momentum));
  }
  std::unique_ptr<cmi::DistillTarget> distill;
  if (info.Length() > 5 && !info[5].IsUndefined()) distill = parseDistill(env, info[5], x.size(0));
  auto lab = torch::from_blob(labels.Data(), {static_cast<int64_t>(labels.ElementLength())}, torch::kInt32)
                 .to(torch::kLong);  // a copy, owned by torch
  auto* work = new TrainWork(env, info.This().As<Napi::Object>(), this, engine_, std::move(x), std::move(lab),
                             info[3].As<Napi::Number>().DoubleValue(), momentum, std::move(distill));
  busy_ = true;
  work->Queue();
  return work->Promise();
}

// batchNormStatsStep(data: Float32Array, shape: number[]) -> Promise<undefined>: one train-mode
// forward without autograd that only updates the BatchNorm running statistics (engine.h)
Napi::Value ModelWrap::BatchNormStatsStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engine& e = use(env, "batchNormStatsStep");
  (void)e;
  auto x = importInput(env, info[0], info[1]);
  auto* work = new BnStatsWork(env, info.This().As<Napi::Object>(), this, engine_, std::move(x));
  busy_ = true;
  work->Queue();
  return work->Promise();
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throwJs(env, "setThreads(n): n must be a number");
  double n = info[0].As<Napi::Number>().DoubleValue();
  if (!(n >= 1) || n != static_cast<double>(static_cast<int>(n)))
    throwJs(env, "setThreads(n): n must be an integer >= 1");
  cmi::setEngineThreads(static_cast<int>(n));
  return env.Undefined();
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cmi::getEngineThreads());
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("torchVersion", Napi::String::New(env, TORCH_VERSION));
  o.Set("mkldnn", Napi::Boolean::New(env, at::hasMKLDNN()));
  o.Set("openmp", Napi::Boolean::New(env, at::hasOpenMP()));
  o.Set("device", Napi::String::New(env, cmi::engineDevice().str()));
  return o;
}

Napi::Value CacheStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = cmi::alloc::stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("installed", Napi::Boolean::New(env, st.installed));
  o.Set("cachedBytes", Napi::Number::New(env, static_cast<double>(st.cachedBytes)));
  o.Set("hits", Napi::Number::New(env, static_cast<double>(st.hits)));
  o.Set("misses", Napi::Number::New(env, static_cast<double>(st.misses)));
  return o;
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  cmi::alloc::emptyCache();
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  cmi::alloc::install();
  exports.Set("cacheStats", Napi::Function::New(env, CacheStats));
  exports.Set("emptyCache", Napi::Function::New(env, EmptyCache));
  exports.Set("Model", ModelWrap::Init(env));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("getThreads", Napi::Function::New(env, GetThreads));
  exports.Set("info", Napi::Function::New(env, Info));
  InitLinalg(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(cmiprune_engine, Init)
