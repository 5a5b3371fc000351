// Implementation of the test double declared in paddle_api.h (see there).
#include "paddle_api.h"

#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace paddle {
namespace lite_api {
namespace {

struct Buffer {
  shape_t shape;
  std::vector<float> data;
  std::vector<int64_t> labels;  // used instead of data when the model outputs labels
};

class StubPredictor : public PaddlePredictor {
 public:
  StubPredictor(int classes, bool labels) : classes_(classes), labels_(labels) {}
  std::unique_ptr<Tensor> GetInput(int) override { return std::unique_ptr<Tensor>(new Tensor(&in_)); }
  std::unique_ptr<const Tensor> GetOutput(int) const override {
    return std::unique_ptr<const Tensor>(new Tensor(static_cast<const void*>(&out_)));
  }
  void Run() override {
    const int64_t h = in_.shape.at(2), w = in_.shape.at(3);
    if (labels_) {
      out_.shape = {1, h, w};
      out_.labels.resize(static_cast<size_t>(h * w));
      for (int64_t p = 0; p < h * w; ++p) out_.labels[static_cast<size_t>(p)] = p % w * classes_ / w;
      return;
    }
    out_.shape = {1, classes_, h, w};
    out_.data.assign(static_cast<size_t>(classes_ * h * w), 0.f);
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x = 0; x < w; ++x) {
        const int64_t c = x * classes_ / w;
        out_.data[static_cast<size_t>((c * h + y) * w + x)] = 1.f;
      }
    }
  }
  std::string GetVersion() const override {
    const char* v = std::getenv("MOBILESEG_STUB_LITE_VERSION");
    return v ? v : "v2.13-rc";
  }

 private:
  int classes_;
  bool labels_;
  Buffer in_;
  mutable Buffer out_;
};

}  // namespace

Tensor::Tensor(void* raw) : raw_tensor_(raw) {}
Tensor::Tensor(const void* raw) : raw_tensor_(const_cast<void*>(raw)) {}

void Tensor::Resize(const shape_t& shape) {
  Buffer* b = static_cast<Buffer*>(raw_tensor_);
  b->shape = shape;
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  b->data.resize(n);
}

template <>
const float* Tensor::data<float>() const {
  return static_cast<Buffer*>(raw_tensor_)->data.data();
}

template <>
const int64_t* Tensor::data<int64_t>() const {
  return static_cast<Buffer*>(raw_tensor_)->labels.data();
}

template <>
const int32_t* Tensor::data<int32_t>() const {
  throw std::runtime_error("the stub writes no int32 output");
}

PrecisionType Tensor::precision() const {
  return static_cast<Buffer*>(raw_tensor_)->labels.empty() ? PrecisionType::kFloat
                                                           : PrecisionType::kInt64;
}

template <>
float* Tensor::mutable_data<float>() const {
  return static_cast<Buffer*>(raw_tensor_)->data.data();
}

shape_t Tensor::shape() const { return static_cast<Buffer*>(raw_tensor_)->shape; }

template <>
std::shared_ptr<PaddlePredictor> CreatePaddlePredictor<MobileConfig>(const MobileConfig& c) {
  std::ifstream f(c.lite_model_file());
  std::string tag;
  int classes = 0;
  if (!(f >> tag) || tag != "STUB" || !(f >> tag) || tag.rfind("classes=", 0) != 0) {
    return nullptr;
  }
  classes = std::atoi(tag.c_str() + 8);
  const bool labels = (f >> tag) && tag == "labels";
  return std::make_shared<StubPredictor>(classes, labels);
}

}  // namespace lite_api
}  // namespace paddle
