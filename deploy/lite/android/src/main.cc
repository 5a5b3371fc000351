// MobileSeg on a phone with Paddle Lite's light API (MobileConfig + .nb).
//
//   mobileseg_lite_demo --model_dir DIR --image IMG [--out_dir .] [--threads 1]
//       [--power_mode high|low|full|no_bind|rand_high|rand_low] [--warmup 10] [--repeats 50]
//       [--input_size HxW]
//
// DIR holds manifest.json and model_arm.nb written by `mobileseg lite`. The demo checks
// the manifest (Lite version, input size), reads and preprocesses the image as the manifest says,
// runs the model warmup + repeats times, reports the average latency of the repeats, then writes
// <image stem>_mask.png and <image stem>_overlay.png into --out_dir. The model's output is float32
// logits or, converted with --output_op argmax, an int64/int32 label map (the manifest says which).
// Bad input: one line "error: ..." on stderr and exit code 1.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mobileseg/demo.h"
#include "paddle_api.h"

#ifndef MOBILESEG_LITE_VERSION
#error "MOBILESEG_LITE_VERSION (the Paddle Lite release this demo links) must be defined"
#endif

namespace {

using paddle::lite_api::PowerMode;

PowerMode ParsePowerMode(const std::string& name) {
  static const std::map<std::string, PowerMode> modes = {
      {"high", paddle::lite_api::LITE_POWER_HIGH},
      {"low", paddle::lite_api::LITE_POWER_LOW},
      {"full", paddle::lite_api::LITE_POWER_FULL},
      {"no_bind", paddle::lite_api::LITE_POWER_NO_BIND},
      {"rand_high", paddle::lite_api::LITE_POWER_RAND_HIGH},
      {"rand_low", paddle::lite_api::LITE_POWER_RAND_LOW},
  };
  const auto it = modes.find(name);
  if (it == modes.end()) {
    throw mobileseg::Error("--power_mode " + name +
                           ": expected high, low, full, no_bind, rand_high or rand_low");
  }
  return it->second;
}

// The label map of the output tensor, of whichever element type Lite reports.
std::vector<uint8_t> Labels(const mobileseg::Manifest& m, const paddle::lite_api::Tensor& out) {
  using paddle::lite_api::PrecisionType;
  switch (out.precision()) {
    case PrecisionType::kFloat:
      return mobileseg::OutputLabels(m, out.data<float>(), "float32", out.shape());
    case PrecisionType::kInt64:
      return mobileseg::OutputLabels(m, out.data<int64_t>(), "int64", out.shape());
    case PrecisionType::kInt32:
      return mobileseg::OutputLabels(m, out.data<int32_t>(), "int32", out.shape());
    default:
      throw mobileseg::Error("model output of Lite precision " +
                             std::to_string(static_cast<int>(out.precision())) +
                             ": expected float32 logits or int64/int32 labels");
  }
}

double Milliseconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

int Run(int argc, char** argv) {
  using namespace mobileseg;
  const auto flags = ParseFlags(argc, argv, {"model_dir", "image", "out_dir", "threads",
                                             "power_mode", "warmup", "repeats", "input_size"});
  const int threads = IntFlag(flags, "threads", 1, 1);
  const int warmup = IntFlag(flags, "warmup", 10, 0);
  const int repeats = IntFlag(flags, "repeats", 50, 1);
  const std::string power_name = Flag(flags, "power_mode", "high");
  const PowerMode power_mode = ParsePowerMode(power_name);
  int req_h = 0, req_w = 0;
  ParseSize(flags.count("input_size") ? flags.at("input_size") : "", &req_h, &req_w);

  const auto t_pre = std::chrono::steady_clock::now();
  const Prepared p = Prepare(Flag(flags, "model_dir"), "arm", Flag(flags, "image"),
                             MOBILESEG_LITE_VERSION, req_h, req_w);
  const double pre_ms = Milliseconds(std::chrono::steady_clock::now() - t_pre);
  const std::vector<int>& shape = p.manifest.input_shape;

  paddle::lite_api::MobileConfig config;
  config.set_model_from_file(p.model_path);
  config.set_threads(threads);
  config.set_power_mode(power_mode);
  std::shared_ptr<paddle::lite_api::PaddlePredictor> predictor =
      paddle::lite_api::CreatePaddlePredictor<paddle::lite_api::MobileConfig>(config);
  if (!predictor) throw Error(p.model_path + ": Paddle Lite could not load the model");
  if (predictor->GetVersion() != p.manifest.lite_version) {
    throw Error(p.manifest.path + ": the model was converted by Paddle Lite " +
                p.manifest.lite_version + " but the Lite library reports " +
                predictor->GetVersion() + ": push the library of the same release");
  }

  std::unique_ptr<paddle::lite_api::Tensor> input = predictor->GetInput(0);
  input->Resize({shape[0], shape[1], shape[2], shape[3]});
  std::memcpy(input->mutable_data<float>(), p.input.data(), p.input.size() * sizeof(float));

  for (int i = 0; i < warmup; ++i) predictor->Run();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    predictor->Run();
    times.push_back(Milliseconds(std::chrono::steady_clock::now() - t0));
  }
  double total = 0;
  for (double t : times) total += t;
  const double avg = total / times.size();

  std::unique_ptr<const paddle::lite_api::Tensor> output = predictor->GetOutput(0);
  const std::string out_dir = Flag(flags, "out_dir", ".");
  const std::string stem = Stem(Flag(flags, "image"));
  const auto t_post = std::chrono::steady_clock::now();
  WriteResults(p, Labels(p.manifest, *output), out_dir, stem);
  const double post_ms = Milliseconds(std::chrono::steady_clock::now() - t_post);

  std::printf("model: %s (Paddle Lite %s)\n", p.model_path.c_str(),
              predictor->GetVersion().c_str());
  std::printf("input: 1x3x%dx%d from %dx%d image; threads %d, power mode %s\n", shape[2],
              shape[3], p.image.height, p.image.width, threads, power_name.c_str());
  std::printf("latency: average %.2f ms over %d runs after %d warm-up (min %.2f, max %.2f) "
              "= %.1f FPS\n", avg, repeats, warmup, *std::min_element(times.begin(), times.end()),
              *std::max_element(times.begin(), times.end()), 1000.0 / avg);
  std::printf("preprocess %.2f ms, postprocess + PNG writing %.2f ms\n", pre_ms, post_ms);
  std::printf("wrote %s/%s_mask.png and %s/%s_overlay.png\n", out_dir.c_str(), stem.c_str(),
              out_dir.c_str(), stem.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
