#include "mobileseg/demo.h"

#include <algorithm>
#include <fstream>
#include <sys/stat.h>

#include "mobileseg/io.h"

namespace mobileseg {

std::map<std::string, std::string> ParseFlags(int argc, char** argv,
                                              const std::vector<std::string>& allowed) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) throw Error("unexpected argument '" + arg + "'");
    std::string key = arg.substr(2), value;
    const size_t eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else {
      if (i + 1 >= argc) throw Error("--" + key + " needs a value");
      value = argv[++i];
    }
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string known;
      for (const auto& k : allowed) known += " --" + k;
      throw Error("unknown option --" + key + " (known:" + known + ")");
    }
    flags[key] = value;
  }
  return flags;
}

std::string Flag(const std::map<std::string, std::string>& flags, const std::string& key,
                 const std::string& fallback) {
  const auto it = flags.find(key);
  if (it != flags.end()) return it->second;
  if (fallback.empty()) throw Error("--" + key + " is required");
  return fallback;
}

int IntFlag(const std::map<std::string, std::string>& flags, const std::string& key,
            int fallback, int min_value) {
  const auto it = flags.find(key);
  if (it == flags.end()) return fallback;
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != it->second.size() || v < min_value) {
    throw Error("--" + key + " " + it->second + ": expected an integer >= " +
                std::to_string(min_value));
  }
  return v;
}

void ParseSize(const std::string& text, int* h, int* w) {
  *h = *w = 0;
  if (text.empty()) return;
  const size_t x = text.find('x');
  try {
    size_t a = 0, b = 0;
    if (x == std::string::npos) throw std::exception();
    *h = std::stoi(text.substr(0, x), &a);
    *w = std::stoi(text.substr(x + 1), &b);
    if (a != x || b != text.size() - x - 1 || *h < 1 || *w < 1) throw std::exception();
  } catch (const std::exception&) {
    throw Error("--input_size " + text + ": expected HxW, e.g. 256x256");
  }
}

Prepared Prepare(const std::string& model_dir, const std::string& target,
                 const std::string& image_path, const std::string& lite_version,
                 int requested_h, int requested_w) {
  Prepared p;
  p.manifest = LoadManifest(model_dir + "/manifest.json");
  CheckLiteVersion(p.manifest, lite_version);
  p.model_path = ModelPath(p.manifest, target);
  const int h = p.manifest.input_shape[2], w = p.manifest.input_shape[3];
  if (requested_h > 0 || requested_w > 0) CheckInputSize(p.manifest, requested_h, requested_w);
  p.image = ReadImageRGB(image_path);
  p.input = Preprocess(p.image, h, w, p.manifest.mean, p.manifest.std);
  return p;
}

std::vector<uint8_t> WriteResults(const Prepared& p, const float* logits,
                                  const std::vector<int64_t>& logits_shape,
                                  const std::string& out_dir, const std::string& stem) {
  const Manifest& m = p.manifest;
  const std::vector<int64_t> expected = {1, m.num_classes, m.input_shape[2], m.input_shape[3]};
  if (logits_shape != expected) {
    std::string got;
    for (int64_t d : logits_shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
    throw Error("model output of shape [" + got + "], expected [1, " +
                std::to_string(m.num_classes) + ", " + std::to_string(m.input_shape[2]) + ", " +
                std::to_string(m.input_shape[3]) + "] (" + m.path + ")");
  }
  const int h = m.input_shape[2], w = m.input_shape[3];
  const std::vector<uint8_t> labels = Argmax(logits, m.num_classes, h, w);
  WriteLabelImages(p.image, ResizeNearest(labels, h, w, p.image.height, p.image.width), out_dir,
                   stem);
  return labels;
}

void WriteLabelImages(const Image& rgb, const std::vector<uint8_t>& labels,
                      const std::string& out_dir, const std::string& stem, double weight) {
  if (labels.size() != static_cast<size_t>(rgb.height) * rgb.width) {
    throw Error("label map of " + std::to_string(labels.size()) + " pixels for a " +
                std::to_string(rgb.height) + "x" + std::to_string(rgb.width) + " image");
  }
  const std::vector<uint8_t> colors = ColorMap(256);
  mkdir(out_dir.c_str(), 0755);  // may exist already; a write error below names the file
  WritePngPalette(out_dir + "/" + stem + "_mask.png", labels, rgb.height, rgb.width, colors);
  WritePngRGB(out_dir + "/" + stem + "_overlay.png",
              Overlay(rgb, ColorizeLabels(labels, rgb.height, rgb.width, colors), weight));
}

std::string Stem(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const size_t dot = name.find_last_of('.');
  return dot == std::string::npos || dot == 0 ? name : name.substr(0, dot);
}

}  // namespace mobileseg
