// Minimal PNG encoder: zlib stream of stored (uncompressed) deflate blocks, so no zlib library
// is needed on the phone or in cross builds. Files are larger than compressed PNGs; any PNG
// reader opens them.
#include <fstream>

#include "mobileseg/io.h"

namespace mobileseg {
namespace {

uint32_t Crc32(const uint8_t* data, size_t n, uint32_t crc = 0) {
  static uint32_t table[256];
  static bool ready = false;
  if (!ready) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = true;
  }
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out->push_back(static_cast<uint8_t>(v >> s));
}

void Chunk(std::vector<uint8_t>* png, const char* type, const std::vector<uint8_t>& body) {
  PutU32(png, static_cast<uint32_t>(body.size()));
  std::vector<uint8_t> typed(type, type + 4);
  typed.insert(typed.end(), body.begin(), body.end());
  png->insert(png->end(), typed.begin(), typed.end());
  PutU32(png, Crc32(typed.data(), typed.size()));
}

std::vector<uint8_t> ZlibStored(const std::vector<uint8_t>& raw) {
  std::vector<uint8_t> z = {0x78, 0x01};
  size_t pos = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - pos);
    const bool last = pos + n == raw.size();
    z.push_back(last ? 1 : 0);
    z.push_back(static_cast<uint8_t>(n & 0xFF));
    z.push_back(static_cast<uint8_t>(n >> 8));
    z.push_back(static_cast<uint8_t>(~n & 0xFF));
    z.push_back(static_cast<uint8_t>((~n >> 8) & 0xFF));
    z.insert(z.end(), raw.begin() + pos, raw.begin() + pos + n);
    pos += n;
  } while (pos < raw.size());
  uint32_t a = 1, b = 0;  // Adler-32
  for (uint8_t v : raw) {
    a = (a + v) % 65521;
    b = (b + a) % 65521;
  }
  PutU32(&z, (b << 16) | a);
  return z;
}

void WritePng(const std::string& path, const uint8_t* pixels, int h, int w, int channels,
              const std::vector<uint8_t>* palette) {
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<uint8_t> header;
  PutU32(&header, static_cast<uint32_t>(w));
  PutU32(&header, static_cast<uint32_t>(h));
  header.push_back(8);                            // bit depth
  header.push_back(palette ? 3 : 2);              // colour type: palette or RGB
  header.insert(header.end(), {0, 0, 0});         // deflate, adaptive filter, no interlace
  Chunk(&png, "IHDR", header);
  if (palette) Chunk(&png, "PLTE", *palette);
  std::vector<uint8_t> raw;
  const size_t row = static_cast<size_t>(w) * channels;
  raw.reserve((row + 1) * h);
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);  // filter type None
    raw.insert(raw.end(), pixels + y * row, pixels + (y + 1) * row);
  }
  Chunk(&png, "IDAT", ZlibStored(raw));
  Chunk(&png, "IEND", {});
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(png.data()), static_cast<std::streamsize>(png.size()));
  if (!f) throw Error(path + ": cannot write the PNG file");
}

}  // namespace

void WritePngRGB(const std::string& path, const Image& rgb) {
  if (rgb.channels != 3) throw Error(path + ": WritePngRGB needs a 3-channel image");
  WritePng(path, rgb.data.data(), rgb.height, rgb.width, 3, nullptr);
}

void WritePngPalette(const std::string& path, const std::vector<uint8_t>& labels, int h, int w,
                     const std::vector<uint8_t>& color_map) {
  if (labels.size() != static_cast<size_t>(h) * w) throw Error(path + ": label map size");
  std::vector<uint8_t> palette(color_map.begin(),
                               color_map.begin() + std::min<size_t>(color_map.size(), 768));
  WritePng(path, labels.data(), h, w, 1, &palette);
}

}  // namespace mobileseg
