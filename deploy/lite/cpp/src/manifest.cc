#include "mobileseg/manifest.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include "mobileseg/prepost.h"

namespace mobileseg {
namespace {

const char kFormat[] = "mobileseg-lite-manifest/1";

// A small JSON value and a recursive-descent parser: enough for the manifest, no dependency.
struct Json {
  enum Type { kNull, kBool, kNumber, kString, kArray, kObject } type = kNull;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;

  const Json* Get(const std::string& key) const {
    for (const auto& kv : object) {
      if (kv.first == key) return &kv.second;
    }
    return nullptr;
  }
};

class Parser {
 public:
  Parser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  Json ParseDocument() {
    Json v = Value();
    Space();
    if (pos_ != s_.size()) Fail("unexpected text after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) {
    throw Error(path_ + ": not valid JSON (" + what + " at byte " + std::to_string(pos_) + ")");
  }
  void Space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool Eat(char c) {
    Space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void Expect(char c) {
    if (!Eat(c)) Fail(std::string("expected '") + c + "'");
  }
  bool Word(const char* w) {
    const std::string word(w);
    if (s_.compare(pos_, word.size(), word) == 0) {
      pos_ += word.size();
      return true;
    }
    return false;
  }
  std::string String() {
    Expect('"');
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) break;
      c = s_[pos_++];
      switch (c) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          if (pos_ + 4 > s_.size()) Fail("short \\u escape");
          const unsigned code = std::stoul(s_.substr(pos_, 4), nullptr, 16);
          pos_ += 4;
          if (code < 0x80) {
            out += static_cast<char>(code);
          } else if (code < 0x800) {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
          }
          break;
        }
        default: out += c;  // \" \\ \/
      }
    }
    if (pos_ >= s_.size()) Fail("unterminated string");
    ++pos_;
    return out;
  }
  Json Value() {
    Space();
    if (pos_ >= s_.size()) Fail("unexpected end");
    Json v;
    const char c = s_[pos_];
    if (c == '{') {
      v.type = Json::kObject;
      ++pos_;
      if (Eat('}')) return v;
      do {
        Space();
        std::string key = String();
        Expect(':');
        v.object.emplace_back(key, Value());
      } while (Eat(','));
      Expect('}');
    } else if (c == '[') {
      v.type = Json::kArray;
      ++pos_;
      if (Eat(']')) return v;
      do {
        v.array.push_back(Value());
      } while (Eat(','));
      Expect(']');
    } else if (c == '"') {
      v.type = Json::kString;
      v.string = String();
    } else if (Word("true")) {
      v.type = Json::kBool;
      v.boolean = true;
    } else if (Word("false")) {
      v.type = Json::kBool;
    } else if (Word("null")) {
      v.type = Json::kNull;
    } else {
      const char* start = s_.c_str() + pos_;
      char* end = nullptr;
      v.number = std::strtod(start, &end);
      if (end == start) Fail("unexpected character");
      v.type = Json::kNumber;
      pos_ += static_cast<size_t>(end - start);
    }
    return v;
  }

  const std::string& s_;
  std::string path_;
  size_t pos_ = 0;
};

const Json& Field(const Json& root, const std::string& dotted, Json::Type type,
                  const std::string& path, const char* expected) {
  const Json* v = &root;
  std::stringstream ss(dotted);
  std::string key;
  while (std::getline(ss, key, '.')) {
    v = v->type == Json::kObject ? v->Get(key) : nullptr;
    if (v == nullptr) throw Error(path + ": field '" + dotted + "' is missing");
  }
  if (v->type != type) throw Error(path + ": field '" + dotted + "' is not " + expected);
  return *v;
}

std::vector<double> Numbers(const Json& root, const std::string& dotted, size_t n,
                            const std::string& path) {
  const Json& a = Field(root, dotted, Json::kArray, path, "a list");
  std::vector<double> out;
  for (const Json& v : a.array) {
    if (v.type != Json::kNumber) break;
    out.push_back(v.number);
  }
  if (out.size() != n || a.array.size() != n) {
    throw Error(path + ": field '" + dotted + "' must hold " + std::to_string(n) + " numbers");
  }
  return out;
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

Manifest LoadManifest(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": no such manifest file (convert the model with `mobileseg lite`)");
  std::stringstream buffer;
  buffer << f.rdbuf();
  const std::string text = buffer.str();
  const Json root = Parser(text, path).ParseDocument();
  if (root.type != Json::kObject) throw Error(path + ": expected a JSON object");

  Manifest m;
  m.path = path;
  const std::string format = Field(root, "format", Json::kString, path, "a string").string;
  if (format != kFormat) {
    throw Error(path + ": field 'format' is '" + format + "', expected '" + kFormat + "'");
  }
  m.lite_version = Field(root, "lite_version", Json::kString, path, "a string").string;
  for (const auto& kv : Field(root, "models", Json::kObject, path, "an object").object) {
    if (kv.second.type != Json::kString) {
      throw Error(path + ": field 'models." + kv.first + "' is not a file name");
    }
    m.models[kv.first] = kv.second.string;
  }
  for (double d : Numbers(root, "input.shape", 4, path)) {
    if (d < 1 || d != static_cast<int>(d)) {
      throw Error(path + ": field 'input.shape' must hold 4 positive integers");
    }
    m.input_shape.push_back(static_cast<int>(d));
  }
  if (m.input_shape[0] != 1 || m.input_shape[1] != 3) {
    throw Error(path + ": field 'input.shape' must be [1, 3, H, W]");
  }
  const std::vector<double> mean = Numbers(root, "input.mean", 3, path);
  const std::vector<double> stdev = Numbers(root, "input.std", 3, path);
  for (int c = 0; c < 3; ++c) {
    if (stdev[c] == 0) throw Error(path + ": field 'input.std' has a zero");
    m.mean[c] = mean[c];
    m.std[c] = stdev[c];
  }
  const double classes = Field(root, "num_classes", Json::kNumber, path, "a number").number;
  if (classes < 1 || classes > 256 || classes != static_cast<int>(classes)) {
    throw Error(path + ": field 'num_classes' must be an integer in [1, 256]");
  }
  m.num_classes = static_cast<int>(classes);
  m.output_kind = Field(root, "output.kind", Json::kString, path, "a string").string;
  if (m.output_kind == "logits") {
    m.output_dtype = "float32";
  } else if (m.output_kind == "labels") {  // --output_op argmax: the label map is in the graph
    m.output_dtype = Field(root, "output.dtype", Json::kString, path, "a string").string;
    if (m.output_dtype != "int64" && m.output_dtype != "int32") {
      throw Error(path + ": field 'output.dtype' is '" + m.output_dtype +
                  "', expected 'int64' or 'int32'");
    }
  } else {
    throw Error(path + ": field 'output.kind' is '" + m.output_kind +
                "', expected 'logits' or 'labels'");
  }
  return m;
}

void CheckLiteVersion(const Manifest& m, const std::string& runtime_lite_version) {
  if (m.lite_version != runtime_lite_version) {
    throw Error(m.path + ": the model was converted by Paddle Lite " + m.lite_version +
                " but this program uses Paddle Lite " + runtime_lite_version +
                "; a .nb runs only with the Lite release that wrote it: convert it again");
  }
}

void CheckInputSize(const Manifest& m, int h, int w) {
  if (h != m.input_shape[2] || w != m.input_shape[3]) {
    throw Error("input size " + std::to_string(h) + "x" + std::to_string(w) +
                " does not fit the model: " + m.path + " says input.shape [1, 3, " +
                std::to_string(m.input_shape[2]) + ", " + std::to_string(m.input_shape[3]) +
                "] (the .nb has a fixed input size)");
  }
}

std::string ModelPath(const Manifest& m, const std::string& target) {
  const auto it = m.models.find(target);
  if (it == m.models.end()) {
    throw Error(m.path + ": no '" + target + "' model in field 'models' (convert with " +
                "--valid_targets " + target + ")");
  }
  const std::string path = Dirname(m.path) + "/" + it->second;
  if (!std::ifstream(path).good()) throw Error(path + ": no such model file (named in " + m.path + ")");
  return path;
}

}  // namespace mobileseg
