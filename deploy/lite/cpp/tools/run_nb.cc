// Run one Paddle Lite .nb on a raw input with the light API (libpaddle_light_api_shared.so):
// the device-side twin of the Python host runner, for checking a runtime built by
// mobileseg_paddle/deploy/lite/arm_runtime.py (under qemu-aarch64 on the host).
//
//   run_nb MODEL.nb INPUT.f32 N,C,H,W OUT_PREFIX [THREADS]
//
// INPUT.f32: the input's float32 values, C order, no header. Writes OUT_PREFIX.bin (output 0's
// values as stored: float32, int64 or int32, C order) and OUT_PREFIX.txt ("<dtype> d0 d1 ...").
// Prints "version <Lite version>" on stdout. Exit 0 on success, 1 with "error: ..." on stderr.
//
//   aarch64-linux-gnu-g++ -std=c++14 run_nb.cc -I<include> -L<lib> -lpaddle_light_api_shared
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "paddle_api.h"

using paddle::lite_api::MobileConfig;
using paddle::lite_api::PrecisionType;

static int Fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 5 || argc > 6)
    return Fail("usage: run_nb MODEL.nb INPUT.f32 N,C,H,W OUT_PREFIX [THREADS]");
  const std::string model = argv[1], input = argv[2], prefix = argv[4];
  std::vector<int64_t> shape;
  std::stringstream dims(argv[3]);
  int64_t count = 1;
  for (std::string d; std::getline(dims, d, ',');) {
    shape.push_back(std::atoll(d.c_str()));
    count *= shape.back();
  }
  if (shape.empty() || count <= 0) return Fail(std::string("bad shape ") + argv[3]);

  std::ifstream in(input, std::ios::binary | std::ios::ate);
  if (!in) return Fail("cannot read " + input);
  if (static_cast<int64_t>(in.tellg()) != count * 4)
    return Fail(input + ": size is not 4 bytes x the shape's " + std::to_string(count) + " values");
  std::vector<float> x(count);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(x.data()), count * 4);

  MobileConfig config;
  config.set_model_from_file(model);
  config.set_threads(argc > 5 ? std::atoi(argv[5]) : 1);
  auto predictor = paddle::lite_api::CreatePaddlePredictor<MobileConfig>(config);
  std::printf("version %s\n", predictor->GetVersion().c_str());

  auto x_tensor = predictor->GetInput(0);
  x_tensor->Resize(shape);
  std::copy(x.begin(), x.end(), x_tensor->mutable_data<float>());
  predictor->Run();

  auto y = predictor->GetOutput(0);
  int64_t n = 1;
  std::string dims_text;
  for (int64_t d : y->shape()) {
    n *= d;
    dims_text += " " + std::to_string(d);
  }
  // output 0 as stored: logits (float32) or an argmax label map (int64 / int32)
  const char* bytes = nullptr;
  std::string dtype;
  size_t item = 4;
  if (y->precision() == PrecisionType::kFloat) {
    bytes = reinterpret_cast<const char*>(y->data<float>());
    dtype = "float32";
  } else if (y->precision() == PrecisionType::kInt64) {
    bytes = reinterpret_cast<const char*>(y->data<int64_t>());
    dtype = "int64";
    item = 8;
  } else if (y->precision() == PrecisionType::kInt32) {
    bytes = reinterpret_cast<const char*>(y->data<int32_t>());
    dtype = "int32";
  } else {
    return Fail("output 0 has precision " + std::to_string(static_cast<int>(y->precision())) +
                ", expected float32, int64 or int32");
  }
  std::ofstream(prefix + ".bin", std::ios::binary).write(bytes, n * item);
  std::ofstream(prefix + ".txt") << dtype << dims_text << "\n";
  return 0;
}
