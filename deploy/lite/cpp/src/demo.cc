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

namespace {

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text;
  for (int64_t d : shape) text += (text.empty() ? "" : ", ") + std::to_string(d);
  return "[" + text + "]";
}

template <typename T>
std::vector<uint8_t> CheckedLabels(const T* data, size_t n, int num_classes,
                                   const std::string& where) {
  std::vector<uint8_t> labels(n);
  for (size_t i = 0; i < n; ++i) {
    if (data[i] < 0 || data[i] >= num_classes) {
      throw Error("model output label " + std::to_string(data[i]) + " at pixel " +
                  std::to_string(i) + " is not a class of " + where + " (num_classes " +
                  std::to_string(num_classes) + ")");
    }
    labels[i] = static_cast<uint8_t>(data[i]);
  }
  return labels;
}

}  // namespace

std::vector<uint8_t> OutputLabels(const Manifest& m, const void* data, const std::string& dtype,
                                  const std::vector<int64_t>& shape) {
  const int h = m.input_shape[2], w = m.input_shape[3];
  const bool logits = m.output_kind == "logits";
  const std::vector<int64_t> expected =
      logits ? std::vector<int64_t>{1, m.num_classes, h, w} : std::vector<int64_t>{1, h, w};
  if (dtype != m.output_dtype || shape != expected) {
    throw Error("model output " + dtype + ShapeText(shape) + ", expected " + m.output_dtype +
                ShapeText(expected) + " (output in " + m.path + ")");
  }
  if (logits) return Argmax(static_cast<const float*>(data), m.num_classes, h, w);
  const size_t n = static_cast<size_t>(h) * w;
  if (dtype == "int64") return CheckedLabels(static_cast<const int64_t*>(data), n, m.num_classes, m.path);
  return CheckedLabels(static_cast<const int32_t*>(data), n, m.num_classes, m.path);
}

void WriteResults(const Prepared& p, const std::vector<uint8_t>& labels,
                  const std::string& out_dir, const std::string& stem) {
  const int h = p.manifest.input_shape[2], w = p.manifest.input_shape[3];
  WriteLabelImages(p.image, ResizeNearest(labels, h, w, p.image.height, p.image.width), out_dir,
                   stem);
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
