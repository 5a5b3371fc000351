// Host twin of the Android demo: the same manifest checks, image reading, preprocessing and
// outputs, with the model run replaced by its output read from a .npy file (or skipped): float32
// logits, or int64/int32 labels for a model converted with --output_op argmax.
//
//   mobileseg_demo_host --model_dir D --image I --lite_version v2.13-rc [--target arm]
//       [--input_size HxW] [--dump_input x.npy] [--output output.npy --out_dir O
//       [--dump_labels labels.npy]]
//
// Exit 0 on success; on bad input one line "error: ..." on stderr and exit 1.
#include <cstdio>
#include <map>
#include <string>

#include "mobileseg/demo.h"
#include "mobileseg/io.h"

int main(int argc, char** argv) {
  using namespace mobileseg;
  try {
    const auto flags = ParseFlags(argc, argv, {"model_dir", "image", "lite_version", "target",
                                               "input_size", "dump_input", "output", "out_dir",
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
    if (flags.count("output")) {
      const NpyArray output = ReadNpy(flags.at("output"));
      const std::map<std::string, std::string> dtypes = {
          {"<f4", "float32"}, {"<i8", "int64"}, {"<i4", "int32"}, {"|u1", "uint8"}};
      const std::vector<uint8_t> labels = OutputLabels(
          p.manifest, output.bytes.data(), dtypes.at(output.dtype), output.shape);
      WriteResults(p, labels, Flag(flags, "out_dir"), Stem(Flag(flags, "image")));
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
