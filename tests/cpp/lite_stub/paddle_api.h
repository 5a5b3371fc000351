// Test double of Paddle Lite's light API (the subset deploy/lite/android/src/main.cc uses, with
// the same names and signatures as Lite's lite/api/paddle_api.h), so the Android demo builds and
// runs on the host in tests/deploy/lite/test_lite_cpp.py. Not Paddle Lite: the "model" file is a
// text line "STUB classes=N" and Run() writes logits whose argmax is vertical stripes of classes
// 0..N-1 ("STUB classes=N labels": those stripes as an int64 label map, as --output_op argmax).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace paddle {
namespace lite_api {

using shape_t = std::vector<int64_t>;

enum class PrecisionType : int { kUnk = 0, kFloat = 1, kInt32 = 3, kInt64 = 7 };

enum PowerMode {
  LITE_POWER_HIGH = 0,
  LITE_POWER_LOW = 1,
  LITE_POWER_FULL = 2,
  LITE_POWER_NO_BIND = 3,
  LITE_POWER_RAND_HIGH = 4,
  LITE_POWER_RAND_LOW = 5
};

struct Tensor {
  explicit Tensor(void* raw);
  explicit Tensor(const void* raw);
  void Resize(const shape_t& shape);
  template <typename T>
  const T* data() const;
  template <typename T>
  T* mutable_data() const;
  shape_t shape() const;
  PrecisionType precision() const;

 private:
  void* raw_tensor_;
};

class PaddlePredictor {
 public:
  virtual std::unique_ptr<Tensor> GetInput(int i) = 0;
  virtual std::unique_ptr<const Tensor> GetOutput(int i) const = 0;
  virtual void Run() = 0;
  virtual std::string GetVersion() const = 0;
  virtual ~PaddlePredictor() = default;
};

class ConfigBase {
 public:
  void set_threads(int threads) { threads_ = threads; }
  int threads() const { return threads_; }
  void set_power_mode(PowerMode mode) { mode_ = mode; }
  PowerMode power_mode() const { return mode_; }

 private:
  int threads_ = 1;
  PowerMode mode_ = LITE_POWER_NO_BIND;
};

class MobileConfig : public ConfigBase {
 public:
  void set_model_from_file(const std::string& x) { lite_model_file_ = x; }
  const std::string& lite_model_file() const { return lite_model_file_; }

 private:
  std::string lite_model_file_;
};

template <>
const float* Tensor::data<float>() const;
template <>
const int64_t* Tensor::data<int64_t>() const;
template <>
const int32_t* Tensor::data<int32_t>() const;
template <>
float* Tensor::mutable_data<float>() const;

template <typename ConfigT>
std::shared_ptr<PaddlePredictor> CreatePaddlePredictor(const ConfigT&);
template <>
std::shared_ptr<PaddlePredictor> CreatePaddlePredictor<MobileConfig>(const MobileConfig&);

}  // namespace lite_api
}  // namespace paddle
