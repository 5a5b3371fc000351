// Image decoding by stb_image (public-domain single header; Debian: libstb-dev).
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#include <stb_image.h>

#include <fstream>

#include "mobileseg/prepost.h"

namespace mobileseg {

Image ReadImageRGB(const std::string& path) {
  if (!std::ifstream(path).good()) throw Error(path + ": no such image file");
  int w = 0, h = 0, channels_in_file = 0;
  unsigned char* pixels = stbi_load(path.c_str(), &w, &h, &channels_in_file, 3);
  if (pixels == nullptr) {
    throw Error(path + ": cannot decode the image (" + stbi_failure_reason() +
                "); expected PNG, JPEG or BMP");
  }
  Image image;
  image.width = w;
  image.height = h;
  image.channels = 3;
  image.data.assign(pixels, pixels + static_cast<size_t>(w) * h * 3);
  stbi_image_free(pixels);
  return image;
}

}  // namespace mobileseg
