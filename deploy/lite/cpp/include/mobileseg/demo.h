// The demo's steps around the model run, shared by the Android demo (which runs Paddle Lite)
// and the host tool (which takes the logits from a file), so the host tests cover all of it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "mobileseg/manifest.h"
#include "mobileseg/prepost.h"

namespace mobileseg {

// "--key value" pairs; a key outside `allowed` or a missing value throws Error.
std::map<std::string, std::string> ParseFlags(int argc, char** argv,
                                              const std::vector<std::string>& allowed);

// A flag's value or `fallback` (an empty fallback means required: Error if absent).
std::string Flag(const std::map<std::string, std::string>& flags, const std::string& key,
                 const std::string& fallback = "");
int IntFlag(const std::map<std::string, std::string>& flags, const std::string& key,
            int fallback, int min_value);

struct Prepared {
  Manifest manifest;
  std::string model_path;     // the target's .nb
  Image image;                // the input image, RGB, original size
  std::vector<float> input;   // model input, 1 x 3 x H x W
};

// Load model_dir/manifest.json, check it against `lite_version` and (if h, w > 0) the requested
// input size, read the image and preprocess it. Every bad input throws one Error.
Prepared Prepare(const std::string& model_dir, const std::string& target,
                 const std::string& image_path, const std::string& lite_version,
                 int requested_h, int requested_w);

// "HxW" -> (h, w); "" -> (0, 0). Error for anything else.
void ParseSize(const std::string& text, int* h, int* w);

// The label map at model resolution from the model's output, as the manifest's output.kind
// says: the argmax of float32 logits (1 x num_classes x H x W), or the graph's own labels
// (1 x H x W, int64 or int32: --output_op argmax). `dtype` names the buffer's element type
// ("float32", "int64", "int32"); a shape, type or label the manifest does not allow throws Error.
std::vector<uint8_t> OutputLabels(const Manifest& m, const void* data, const std::string& dtype,
                                  const std::vector<int64_t>& shape);

// Nearest resize of the model-resolution `labels` to the image's size, then WriteLabelImages.
void WriteResults(const Prepared& p, const std::vector<uint8_t>& labels,
                  const std::string& out_dir, const std::string& stem);

// The demo's pictures of a label map at the image's size: out_dir/<stem>_mask.png (palette PNG
// of paddleseg's colours) and out_dir/<stem>_overlay.png (Overlay with the image's share
// `weight`; the demo keeps paddleseg's 0.6).
void WriteLabelImages(const Image& rgb, const std::vector<uint8_t>& labels,
                      const std::string& out_dir, const std::string& stem, double weight = 0.6);

// File name without folder and extension: "a/b/frame.png" -> "frame".
std::string Stem(const std::string& path);

}  // namespace mobileseg
