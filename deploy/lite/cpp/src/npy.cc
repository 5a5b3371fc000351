// .npy version 1.0 reader/writer for the dtypes the demo tools exchange with Python.
#include <fstream>
#include <sstream>

#include "mobileseg/io.h"

namespace mobileseg {
namespace {

size_t ItemSize(const std::string& dtype) {
  if (dtype == "<f4") return 4;
  if (dtype == "|u1") return 1;
  if (dtype == "<i8") return 8;  // labels of a model converted with --output_op argmax
  if (dtype == "<i4") return 4;
  return 0;
}

std::string HeaderValue(const std::string& header, const std::string& key) {
  const size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) return "";
  size_t start = header.find(':', k) + 1;
  while (start < header.size() && header[start] == ' ') ++start;
  size_t end = start;
  if (header[start] == '(') {
    end = header.find(')', start) + 1;
  } else if (header[start] == '\'') {
    end = header.find('\'', start + 1) + 1;
  } else {
    end = header.find_first_of(",}", start);
  }
  return header.substr(start, end - start);
}

}  // namespace

size_t NpyArray::size() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

NpyArray ReadNpy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": no such .npy file");
  char magic[8];
  f.read(magic, 8);
  if (!f || std::string(magic, 6) != "\x93NUMPY" || magic[6] != 1) {
    throw Error(path + ": not a version-1 .npy file");
  }
  unsigned char len_bytes[2];
  f.read(reinterpret_cast<char*>(len_bytes), 2);
  std::string header(len_bytes[0] | (len_bytes[1] << 8), '\0');
  f.read(&header[0], static_cast<std::streamsize>(header.size()));
  NpyArray a;
  const std::string descr = HeaderValue(header, "descr");
  a.dtype = descr.size() >= 2 ? descr.substr(1, descr.size() - 2) : "";
  if (ItemSize(a.dtype) == 0) throw Error(path + ": dtype " + descr + " (expected <f4, <i8, <i4 or |u1)");
  if (HeaderValue(header, "fortran_order") != "False") {
    throw Error(path + ": Fortran-ordered arrays are not supported");
  }
  std::string shape = HeaderValue(header, "shape");
  std::stringstream ss(shape.substr(1, shape.size() - 2));
  std::string dim;
  while (std::getline(ss, dim, ',')) {
    if (dim.find_first_not_of(' ') != std::string::npos) a.shape.push_back(std::stoll(dim));
  }
  a.bytes.resize(a.size() * ItemSize(a.dtype));
  f.read(reinterpret_cast<char*>(a.bytes.data()), static_cast<std::streamsize>(a.bytes.size()));
  if (!f) throw Error(path + ": file shorter than its header says");
  return a;
}

void WriteNpy(const std::string& path, const NpyArray& a) {
  std::string shape = "(";
  for (size_t i = 0; i < a.shape.size(); ++i) {
    shape += std::to_string(a.shape[i]) + (a.shape.size() == 1 || i + 1 < a.shape.size() ? "," : "");
    if (i + 1 < a.shape.size()) shape += " ";
  }
  shape += ")";
  std::string header = "{'descr': '" + a.dtype + "', 'fortran_order': False, 'shape': " +
                       shape + ", }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  const char len[2] = {static_cast<char>(header.size() & 0xFF),
                       static_cast<char>(header.size() >> 8)};
  f.write(len, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(a.bytes.data()),
          static_cast<std::streamsize>(a.bytes.size()));
  if (!f) throw Error(path + ": cannot write");
}

NpyArray MakeNpyF32(const std::vector<float>& data, const std::vector<int64_t>& shape) {
  NpyArray a;
  a.shape = shape;
  a.dtype = "<f4";
  const uint8_t* p = reinterpret_cast<const uint8_t*>(data.data());
  a.bytes.assign(p, p + data.size() * 4);
  return a;
}

NpyArray MakeNpyU8(const std::vector<uint8_t>& data, const std::vector<int64_t>& shape) {
  NpyArray a;
  a.shape = shape;
  a.dtype = "|u1";
  a.bytes = data;
  return a;
}

}  // namespace mobileseg
