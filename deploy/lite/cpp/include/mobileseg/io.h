// File formats of the demo: PNG output (written here, no zlib needed) and .npy arrays.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mobileseg/prepost.h"

namespace mobileseg {

// 8-bit RGB PNG. Throws Error naming the file.
void WritePngRGB(const std::string& path, const Image& rgb);

// 8-bit palette PNG: pixel values are the labels, the palette their colours (as paddleseg's
// pseudo-colour prediction). color_map holds up to 256 RGB triples.
void WritePngPalette(const std::string& path, const std::vector<uint8_t>& labels, int h, int w,
                     const std::vector<uint8_t>& color_map);

// A little-endian C-order .npy array of float32 ('<f4') or uint8 ('|u1').
struct NpyArray {
  std::vector<int64_t> shape;
  std::string dtype;            // "<f4", "<i8", "<i4" or "|u1"
  std::vector<uint8_t> bytes;   // raw data
  size_t size() const;          // number of elements
};

NpyArray ReadNpy(const std::string& path);
void WriteNpy(const std::string& path, const NpyArray& array);
NpyArray MakeNpyF32(const std::vector<float>& data, const std::vector<int64_t>& shape);
NpyArray MakeNpyU8(const std::vector<uint8_t>& data, const std::vector<int64_t>& shape);

}  // namespace mobileseg
