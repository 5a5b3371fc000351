// manifest.json written beside the .nb files by `mobileseg lite`
// (mobileseg_paddle/deploy/lite/manifest.py).
#pragma once

#include <map>
#include <string>
#include <vector>

namespace mobileseg {

struct Manifest {
  std::string path;                          // the file it was read from (for messages)
  std::string lite_version;                  // Paddle Lite release that wrote the .nb files
  std::map<std::string, std::string> models; // target ("arm", "x86") -> .nb file name
  std::vector<int> input_shape;              // N, C, H, W
  double mean[3] = {0.5, 0.5, 0.5};
  double std[3] = {0.5, 0.5, 0.5};
  int num_classes = 0;
  std::string output_kind;                   // "logits": (N, num_classes, H, W) float32;
                                             // "labels": (N, H, W) of output_dtype
  std::string output_dtype;                  // "float32", "int64" or "int32"
};

// Parse and check the fields (format, shapes, counts). Throws Error naming file and field.
Manifest LoadManifest(const std::string& path);

// Throws Error unless the manifest was written by `runtime_lite_version`.
void CheckLiteVersion(const Manifest& m, const std::string& runtime_lite_version);

// Throws Error if a requested input size (h, w) differs from the manifest's fixed size.
void CheckInputSize(const Manifest& m, int h, int w);

// Path of the .nb for `target` (in the manifest's folder); throws Error if absent or missing.
std::string ModelPath(const Manifest& m, const std::string& target);

}  // namespace mobileseg
