// Pre- and post-processing of the MobileSeg demo, with no Paddle Lite dependency.
//
// The maths follow the Python pipeline (paddleseg's transforms and visualize):
//   image (RGB uint8, HWC) -> float -> bilinear resize as cv2.resize(INTER_LINEAR) on float32
//   -> (x / 255 - mean) / std -> CHW;  logits (C, H, W) -> argmax over C (first maximum wins)
//   -> label map (uint8) -> paddleseg colour map / overlay (0.6 image + 0.4 colour).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace mobileseg {

// Every user-facing failure (bad file, bad field, bad size): one message, shown as is.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// 8-bit image, rows top to bottom, channels interleaved (RGB for 3 channels).
struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> data;  // height * width * channels
};

// Read a PNG/JPEG/BMP file as 3-channel RGB. Throws Error naming the file.
Image ReadImageRGB(const std::string& path);

// cv2.resize(src, (dst_w, dst_h), interpolation=INTER_LINEAR) for a float32 HWC image:
// half-pixel centres, edge replication, weights computed as OpenCV does.
std::vector<float> ResizeBilinear(const std::vector<float>& src, int src_h, int src_w,
                                  int channels, int dst_h, int dst_w);

// Model input from an RGB image: resize to (dst_h, dst_w), (x / 255 - mean) / std, CHW float32.
// mean and std are doubles because paddleseg subtracts and divides by float64 arrays.
std::vector<float> Preprocess(const Image& rgb, int dst_h, int dst_w, const double mean[3],
                              const double std[3]);

// Label map (h * w) from logits laid out (num_classes, h, w): index of the largest logit,
// the first one on ties (as numpy.argmax). num_classes must be in [1, 256].
std::vector<uint8_t> Argmax(const float* logits, int num_classes, int h, int w);

// Nearest-neighbour resize of a label map, as cv2.resize(INTER_NEAREST).
std::vector<uint8_t> ResizeNearest(const std::vector<uint8_t>& labels, int src_h, int src_w,
                                   int dst_h, int dst_w);

// paddleseg.utils.visualize.get_color_map_list(n): n RGB triples, class 0 first, (128, 0, 0).
std::vector<uint8_t> ColorMap(int num_colors = 256);

// Colour of each label (RGB image of the label map's size).
Image ColorizeLabels(const std::vector<uint8_t>& labels, int h, int w,
                     const std::vector<uint8_t>& color_map);

// cv2.addWeighted(image, weight, colour, 1 - weight, 0), rounded as OpenCV does; the default is
// paddleseg's visualize blend.
Image Overlay(const Image& rgb, const Image& color, double weight = 0.6);

}  // namespace mobileseg
