// The demo's painting step on its own: a label map at the image's size in, the demo's mask and
// overlay PNGs out (WriteLabelImages, the code the Android demo runs after the model). Lets
// tests/test_palette.py feed the C++ the same label map as paddleseg, infer and pipeline.py.
//
//   mobileseg_paint_host --image I --labels labels.npy (uint8, H x W) --out_dir O [--weight 0.6]
//
// --weight is the image's share of the overlay (the demo always uses paddleseg's 0.6).
// Exit 0 on success; on bad input one line "error: ..." on stderr and exit 1.
#include <cstdio>
#include <string>

#include "mobileseg/demo.h"
#include "mobileseg/io.h"

namespace {

double WeightFlag(const std::map<std::string, std::string>& flags) {
  const std::string text = mobileseg::Flag(flags, "weight", "0.6");
  size_t used = 0;
  double weight = -1;
  try {
    weight = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(weight >= 0 && weight <= 1)) {
    throw mobileseg::Error("--weight " + text + ": expected a number in [0, 1]");
  }
  return weight;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mobileseg;
  try {
    const auto flags = ParseFlags(argc, argv, {"image", "labels", "out_dir", "weight"});
    const double weight = WeightFlag(flags);
    const Image rgb = ReadImageRGB(Flag(flags, "image"));
    const NpyArray labels = ReadNpy(Flag(flags, "labels"));
    const std::vector<int64_t> expected = {rgb.height, rgb.width};
    if (labels.dtype != "|u1" || labels.shape != expected) {
      throw Error(flags.at("labels") + ": expected a uint8 label map of the image's size " +
                  std::to_string(rgb.height) + "x" + std::to_string(rgb.width));
    }
    WriteLabelImages(rgb, labels.bytes, Flag(flags, "out_dir"), Stem(flags.at("image")), weight);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
