// JobSpec -> normalised YAML and its digest. The text is built by hand rather than with
// YAML::Emitter so that its exact bytes (and thus the digest) depend only on the spec:
// every field in proto order, strings always double-quoted, doubles in shortest form.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <string>

#include "common/sha256.h"
#include "spec/jobspec_loader.h"
#include "spec/spec_internal.h"

namespace shoal {
namespace spec_internal {

std::string FormatDouble(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  char buf[64];
  // to_chars without a precision gives the shortest text that reads back bit-exact.
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

}  // namespace spec_internal

namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Double-quoted YAML: only '"', '\' and control bytes need escapes; UTF-8 passes through.
std::string QuoteYaml(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof(esc), "\\x%02x", c);
      out += esc;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// One value of `f`; `index` < 0 for a singular field.
std::string FormatValue(const Message& msg, const FieldDescriptor* f, int index) {
  const Reflection* r = msg.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return std::to_string(rep ? r->GetRepeatedInt32(msg, f, index) : r->GetInt32(msg, f));
    case FieldDescriptor::CPPTYPE_INT64:
      return std::to_string(rep ? r->GetRepeatedInt64(msg, f, index) : r->GetInt64(msg, f));
    case FieldDescriptor::CPPTYPE_UINT32:
      return std::to_string(rep ? r->GetRepeatedUInt32(msg, f, index) : r->GetUInt32(msg, f));
    case FieldDescriptor::CPPTYPE_UINT64:
      return std::to_string(rep ? r->GetRepeatedUInt64(msg, f, index) : r->GetUInt64(msg, f));
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return spec_internal::FormatDouble(rep ? r->GetRepeatedDouble(msg, f, index) : r->GetDouble(msg, f));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return spec_internal::FormatDouble(rep ? r->GetRepeatedFloat(msg, f, index) : r->GetFloat(msg, f));
    case FieldDescriptor::CPPTYPE_BOOL:
      return (rep ? r->GetRepeatedBool(msg, f, index) : r->GetBool(msg, f)) ? "true" : "false";
    case FieldDescriptor::CPPTYPE_STRING:
      return QuoteYaml(rep ? r->GetRepeatedString(msg, f, index) : r->GetString(msg, f));
    default:
      return "null";  // no such fields in jobspec.proto; kept total for safety
  }
}

void WriteMessage(const Message& msg, int indent, std::string* out) {
  const std::string pad(static_cast<size_t>(indent), ' ');
  const auto* desc = msg.GetDescriptor();
  const Reflection* r = msg.GetReflection();
  // Walk the descriptor, not ListFields: fields equal to zero must still be written.
  for (int i = 0; i < desc->field_count(); ++i) {
    const FieldDescriptor* f = desc->field(i);
    *out += pad + f->name() + ":";
    if (f->is_map()) {
      // map<string, string> (labels): sorted by key, since a map has no order of its own
      // and the digest must not depend on one.
      std::vector<std::pair<std::string, std::string>> entries;
      for (int k = 0; k < r->FieldSize(msg, f); ++k) {
        const Message& e = r->GetRepeatedMessage(msg, f, k);
        const Reflection* er = e.GetReflection();
        entries.emplace_back(er->GetString(e, e.GetDescriptor()->map_key()), er->GetString(e, e.GetDescriptor()->map_value()));
      }
      std::sort(entries.begin(), entries.end());
      *out += " {";
      for (size_t k = 0; k < entries.size(); ++k)
        *out += (k ? ", " : "") + QuoteYaml(entries[k].first) + ": " + QuoteYaml(entries[k].second);
      *out += "}\n";
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated()) {
      *out += "\n";
      WriteMessage(r->GetMessage(msg, f), indent + 2, out);
    } else if (f->is_repeated()) {
      *out += " [";
      for (int k = 0; k < r->FieldSize(msg, f); ++k) {
        if (k > 0) *out += ", ";
        *out += FormatValue(msg, f, k);
      }
      *out += "]\n";
    } else {
      *out += ' ';
      *out += FormatValue(msg, f, -1);
      *out += '\n';
    }
  }
}

}  // namespace

std::string JobSpecToYaml(const JobSpec& spec) {
  std::string out;
  WriteMessage(spec, 0, &out);
  return out;
}

std::string JobSpecDigest(const JobSpec& spec) { return Sha256Hex(JobSpecToYaml(spec)); }

}  // namespace shoal
