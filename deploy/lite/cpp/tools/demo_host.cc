// Host twin of the Android demo: the same manifest checks, image reading, preprocessing and
// outputs, with the model run replaced by logits read from a .npy file (or skipped).
//
//   mobileseg_demo_host --model_dir D --image I --lite_version v2.13-rc [--target arm]
//       [--input_size HxW] [--dump_input x.npy] [--logits logits.npy --out_dir O
//       [--dump_labels labels.npy]]
//
// Exit 0 on success; on bad input one line "error: ..." on stderr and exit 1.
#include <cstdio>

#include "mobileseg/demo.h"
#include "mobileseg/io.h"

int main(int argc, char** argv) {
  using namespace mobileseg;
  try {
    const auto flags = ParseFlags(argc, argv, {"model_dir", "image", "lite_version", "target",
                                               "input_size", "dump_input", "logits", "out_dir",
                                               "dump_labels"});
    int h = 0, w = 0;
    ParseSize(flags.count("input_size") ? flags.at("input_size") : "", &h, &w);
    const Prepared p = Prepare(Flag(flags, "model_dir"), Flag(flags, "target", "arm"),
                               Flag(flags, "image"), Flag(flags, "lite_version"), h, w);
    const auto& shape = p.manifest.input_shape;
    if (flags.count("dump_input")) {
      WriteNpy(flags.at("dump_input"),
               MakeNpyF32(p.input, {shape[0], shape[1], shape[2], shape[3]}));
    }
    if (flags.count("logits")) {
      const NpyArray logits = ReadNpy(flags.at("logits"));
      if (logits.dtype != "<f4") throw Error(flags.at("logits") + ": expected float32 logits");
      const std::vector<uint8_t> labels =
          WriteResults(p, reinterpret_cast<const float*>(logits.bytes.data()), logits.shape,
                       Flag(flags, "out_dir"), Stem(Flag(flags, "image")));
      if (flags.count("dump_labels")) {
        WriteNpy(flags.at("dump_labels"), MakeNpyU8(labels, {shape[2], shape[3]}));
      }
    }
    std::printf("ok: %s (%dx%d image) -> input 1x3x%dx%d\n", p.model_path.c_str(),
                p.image.height, p.image.width, shape[2], shape[3]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
