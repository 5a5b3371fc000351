#include "mobileseg/prepost.h"

#include <algorithm>
#include <cmath>

namespace mobileseg {
namespace {

// One output coordinate of cv2's INTER_LINEAR: source indices and weights.
struct Tap {
  int i0, i1;
  float w0, w1;
};

// OpenCV computes scale = 1 / (dst / src) in double and the position in float.
std::vector<Tap> LinearTaps(int src, int dst, bool clamp_weights) {
  const double scale = 1.0 / (static_cast<double>(dst) / src);
  std::vector<Tap> taps(dst);
  for (int d = 0; d < dst; ++d) {
    float f = static_cast<float>((d + 0.5) * scale - 0.5);
    int s = static_cast<int>(std::floor(f));
    f -= s;
    if (clamp_weights) {  // columns: OpenCV moves the taps inside and zeroes the fraction
      if (s < 0) f = 0.f, s = 0;
      if (s >= src - 1) f = 0.f, s = src - 1;
    }
    // rows keep their weights; only the row indices are clamped
    taps[d].i0 = std::min(std::max(s, 0), src - 1);
    taps[d].i1 = std::min(std::max(s + 1, 0), src - 1);
    taps[d].w0 = 1.f - f;
    taps[d].w1 = f;
  }
  return taps;
}

}  // namespace

std::vector<float> ResizeBilinear(const std::vector<float>& src, int src_h, int src_w,
                                  int channels, int dst_h, int dst_w) {
  if (src_h <= 0 || src_w <= 0 || dst_h <= 0 || dst_w <= 0 || channels <= 0 ||
      src.size() != static_cast<size_t>(src_h) * src_w * channels) {
    throw Error("ResizeBilinear: bad sizes");
  }
  const std::vector<Tap> xs = LinearTaps(src_w, dst_w, true);
  const std::vector<Tap> ys = LinearTaps(src_h, dst_h, false);
  const int row_len = dst_w * channels;
  // Horizontal pass of every source row that is used, then the vertical blend (OpenCV's order).
  std::vector<float> hrow(static_cast<size_t>(src_h) * row_len);
  std::vector<bool> done(src_h, false);
  auto horizontal = [&](int sy) {
    if (done[sy]) return;
    const float* s = &src[static_cast<size_t>(sy) * src_w * channels];
    float* d = &hrow[static_cast<size_t>(sy) * row_len];
    for (int x = 0; x < dst_w; ++x) {
      const Tap& t = xs[x];
      for (int c = 0; c < channels; ++c) {
        d[x * channels + c] = s[t.i0 * channels + c] * t.w0 + s[t.i1 * channels + c] * t.w1;
      }
    }
    done[sy] = true;
  };
  std::vector<float> dst(static_cast<size_t>(dst_h) * row_len);
  for (int y = 0; y < dst_h; ++y) {
    const Tap& t = ys[y];
    horizontal(t.i0);
    horizontal(t.i1);
    const float* r0 = &hrow[static_cast<size_t>(t.i0) * row_len];
    const float* r1 = &hrow[static_cast<size_t>(t.i1) * row_len];
    float* d = &dst[static_cast<size_t>(y) * row_len];
    for (int i = 0; i < row_len; ++i) d[i] = r0[i] * t.w0 + r1[i] * t.w1;
  }
  return dst;
}

std::vector<float> Preprocess(const Image& rgb, int dst_h, int dst_w, const double mean[3],
                              const double std[3]) {
  if (rgb.channels != 3) throw Error("Preprocess: expected a 3-channel RGB image");
  std::vector<float> pixels(rgb.data.begin(), rgb.data.end());
  const std::vector<float> resized =
      ResizeBilinear(pixels, rgb.height, rgb.width, 3, dst_h, dst_w);
  const size_t plane = static_cast<size_t>(dst_h) * dst_w;
  std::vector<float> chw(3 * plane);
  for (size_t p = 0; p < plane; ++p) {
    for (int c = 0; c < 3; ++c) {
      // paddleseg: float32 x / 255, then float64 mean and std, stored back as float32
      const float scaled = resized[p * 3 + c] / 255.0f;
      const float centred = static_cast<float>(static_cast<double>(scaled) - mean[c]);
      chw[c * plane + p] = static_cast<float>(static_cast<double>(centred) / std[c]);
    }
  }
  return chw;
}

std::vector<uint8_t> Argmax(const float* logits, int num_classes, int h, int w) {
  if (num_classes < 1 || num_classes > 256) {
    throw Error("Argmax: num_classes " + std::to_string(num_classes) + " not in [1, 256]");
  }
  const size_t plane = static_cast<size_t>(h) * w;
  std::vector<uint8_t> labels(plane, 0);
  std::vector<float> best(logits, logits + plane);
  for (int c = 1; c < num_classes; ++c) {
    const float* l = logits + c * plane;
    for (size_t p = 0; p < plane; ++p) {
      if (l[p] > best[p]) {  // strict: the first maximum wins
        best[p] = l[p];
        labels[p] = static_cast<uint8_t>(c);
      }
    }
  }
  return labels;
}

std::vector<uint8_t> ResizeNearest(const std::vector<uint8_t>& labels, int src_h, int src_w,
                                   int dst_h, int dst_w) {
  if (labels.size() != static_cast<size_t>(src_h) * src_w) throw Error("ResizeNearest: bad size");
  const double fx = 1.0 / (static_cast<double>(dst_w) / src_w);
  const double fy = 1.0 / (static_cast<double>(dst_h) / src_h);
  std::vector<int> xofs(dst_w);
  for (int x = 0; x < dst_w; ++x) {
    xofs[x] = std::min(static_cast<int>(std::floor(x * fx)), src_w - 1);
  }
  std::vector<uint8_t> out(static_cast<size_t>(dst_h) * dst_w);
  for (int y = 0; y < dst_h; ++y) {
    const int sy = std::min(static_cast<int>(std::floor(y * fy)), src_h - 1);
    for (int x = 0; x < dst_w; ++x) {
      out[static_cast<size_t>(y) * dst_w + x] = labels[static_cast<size_t>(sy) * src_w + xofs[x]];
    }
  }
  return out;
}

std::vector<uint8_t> ColorMap(int num_colors) {
  // Class k gets the bits of k + 1 spread over the high bits of R, G, B (paddleseg's list
  // starts at label 1: black is not used, class 0 is (128, 0, 0)).
  std::vector<uint8_t> map(3 * num_colors, 0);
  for (int k = 0; k < num_colors; ++k) {
    int lab = k + 1;
    for (int j = 0; lab; ++j, lab >>= 3) {
      map[3 * k + 0] |= ((lab >> 0) & 1) << (7 - j);
      map[3 * k + 1] |= ((lab >> 1) & 1) << (7 - j);
      map[3 * k + 2] |= ((lab >> 2) & 1) << (7 - j);
    }
  }
  return map;
}

Image ColorizeLabels(const std::vector<uint8_t>& labels, int h, int w,
                     const std::vector<uint8_t>& color_map) {
  Image out;
  out.width = w;
  out.height = h;
  out.channels = 3;
  out.data.resize(static_cast<size_t>(h) * w * 3);
  for (size_t p = 0; p < labels.size(); ++p) {
    const size_t k = 3 * static_cast<size_t>(labels[p]);
    if (k + 2 >= color_map.size()) throw Error("ColorizeLabels: label outside the colour map");
    for (int c = 0; c < 3; ++c) out.data[3 * p + c] = color_map[k + c];
  }
  return out;
}

Image Overlay(const Image& rgb, const Image& color, double weight) {
  if (rgb.width != color.width || rgb.height != color.height || rgb.channels != color.channels) {
    throw Error("Overlay: image and colour map differ in size");
  }
  Image out = rgb;
  // OpenCV converts both weights (given in double) to float and computes, in float,
  // a * alpha + (b * beta + gamma) with a fused multiply-add where the CPU has one (v_muladd:
  // AVX2 on x86, NEON on aarch64); weights such as 0.3 give exact halves, where an unfused sum
  // would round the other way. gamma is 0; b * beta stays a separate product (-ffp-contract=off).
  const float alpha = static_cast<float>(weight), beta = static_cast<float>(1.0 - weight);
  for (size_t i = 0; i < out.data.size(); ++i) {
    const float v = std::fma(static_cast<float>(rgb.data[i]), alpha, color.data[i] * beta);
    // saturate_cast<uchar>: round half to even (the default rounding mode), then clamp
    out.data[i] = static_cast<uint8_t>(std::min(255.f, std::max(0.f, std::nearbyint(v))));
  }
  return out;
}

}  // namespace mobileseg
