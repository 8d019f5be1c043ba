// YAML -> JobSpec through protobuf reflection: YAML keys are the proto field names, so the
// proto is the one schema (a new proto field is readable, writable and overridable at once).
// yaml-cpp reports errors by throwing; every call into it is caught here and becomes a Status.
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "spec/spec_internal.h"

namespace shoal::spec_internal {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// One converted YAML scalar; only the member matching the field's type is meaningful.
struct Scalar {
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
  bool b = false;
  std::string s;
};

std::string FieldList(const Descriptor* desc) {
  std::string out;
  for (int i = 0; i < desc->field_count(); ++i) {
    if (i > 0) out += ", ";
    out += desc->field(i)->name();
  }
  return out;
}

// How a node looks to a person reading an error ("'five'", "a map", "null").
std::string Describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Scalar:
      return (n.Tag() == "!" ? "quoted string '" : "'") + n.Scalar() + "'";
    default: return "nothing";
  }
}

const char* KindName(FieldDescriptor::CppType t) {
  switch (t) {
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64: return "an integer";
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64: return "a non-negative integer";
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: return "a number";
    case FieldDescriptor::CPPTYPE_BOOL: return "true or false";
    case FieldDescriptor::CPPTYPE_STRING: return "a string";
    case FieldDescriptor::CPPTYPE_MESSAGE: return "a map";
    default: return "a supported value";
  }
}

// Plain decimal only: "1e3", "0x10", "1_000" and "5.0" are refused for integer fields so
// that a typo never silently becomes a different count.
bool ParseInt(const std::string& s, int64_t lo, int64_t hi, int64_t* out) {
  size_t start = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (s.size() == start) return false;
  for (size_t k = start; k < s.size(); ++k) {
    if (s[k] < '0' || s[k] > '9') return false;
  }
  errno = 0;
  long long v = std::strtoll(s.c_str(), nullptr, 10);
  if (errno == ERANGE || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool ParseUint(const std::string& s, uint64_t* out) {
  size_t start = (!s.empty() && s[0] == '+') ? 1 : 0;
  if (s.size() == start) return false;
  for (size_t k = start; k < s.size(); ++k) {
    if (s[k] < '0' || s[k] > '9') return false;
  }
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), nullptr, 10);
  if (errno == ERANGE) return false;
  *out = v;
  return true;
}

// YAML's .inf/.nan spellings are accepted so JobSpecToYaml output always reads back;
// validation then refuses non-finite values with a message naming the field.
bool ParseDouble(const std::string& s, double* out) {
  static const std::map<std::string, double> kSpecial = {
      {".inf", INFINITY}, {".Inf", INFINITY}, {".INF", INFINITY},
      {"+.inf", INFINITY}, {"+.Inf", INFINITY}, {"+.INF", INFINITY},
      {"-.inf", -INFINITY}, {"-.Inf", -INFINITY}, {"-.INF", -INFINITY},
      {".nan", NAN}, {".NaN", NAN}, {".NAN", NAN}};
  if (auto it = kSpecial.find(s); it != kSpecial.end()) {
    *out = it->second;
    return true;
  }
  // strtod alone would also take "inf", "nan" and hex floats; YAML does not.
  if (s.empty() || s.find_first_not_of("0123456789+-.eE") != std::string::npos) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

bool ParseBool(const std::string& s, bool* out) {
  // YAML 1.2 core schema: yes/no/on/off (YAML 1.1) are refused as too easy to misread.
  if (s == "true" || s == "True" || s == "TRUE") return *out = true, true;
  if (s == "false" || s == "False" || s == "FALSE") return *out = false, true;
  return false;
}

// Applies YAML nodes to a message. In file mode errors cite "source line N"; in override
// mode they cite the override itself, since that is what the user has to fix.
class Applier {
 public:
  Applier(std::string source, bool override_mode, FieldOrigins* origins)
      : source_(std::move(source)), override_mode_(override_mode), origins_(origins) {}

  Status ApplyMessage(const YAML::Node& node, Message* msg, const std::string& prefix) {
    if (!node.IsMap()) {
      return Error(prefix.empty() ? "top level" : prefix,
                   std::string("expected a map, got ") + Describe(node), node);
    }
    Record(prefix, node);
    const Descriptor* desc = msg->GetDescriptor();
    std::map<std::string, int> seen;  // yaml-cpp keeps duplicate keys; we refuse them
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      if (!key.IsScalar()) {
        return Error(prefix.empty() ? "top level" : prefix,
                     "field names must be plain words, got " + Describe(key), key);
      }
      const std::string& name = key.Scalar();
      const std::string path = prefix.empty() ? name : prefix + "." + name;
      const FieldDescriptor* f = desc->FindFieldByName(name);
      if (f == nullptr) {
        return InvalidArgument("unknown field '" + path + "' (" + Where(key) +
                               "); expected one of: " + FieldList(desc));
      }
      int line = key.Mark().line + 1;
      auto [prev, inserted] = seen.emplace(name, line);
      if (!inserted) {
        return Error(path, override_mode_ ? std::string("set twice")
                                          : "set twice, first on line " + std::to_string(prev->second),
                     key);
      }
      RETURN_IF_ERROR(ApplyField(value, msg, f, path, key));
    }
    return OkStatus();
  }

  // `key` locates the error when the value itself carries no position (an empty value).
  Status ApplyField(const YAML::Node& value, Message* msg, const FieldDescriptor* f,
                    const std::string& path, const YAML::Node& key) {
    const Reflection* refl = msg->GetReflection();
    if (f->is_map()) return ApplyStringMap(value, msg, f, path, key);
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) return Internal(path + ": repeated messages are not supported");
      if (!value.IsMap()) {
        return Error(path, "expected a map, got " + Describe(value), value, key);
      }
      // Sections merge: keys absent here keep their defaults (or earlier values).
      return ApplyMessage(value, refl->MutableMessage(msg, f), path);
    }
    if (f->is_repeated()) {
      if (!value.IsSequence()) {
        return Error(path, "expected a list, got " + Describe(value), value, key);
      }
      // A list replaces the previous one entirely, and so do its recorded origins.
      refl->ClearField(msg, f);
      ForgetBelow(path + "[");
      Record(path, value, key);
      for (size_t i = 0; i < value.size(); ++i) {
        const std::string elem_path = path + "[" + std::to_string(i) + "]";
        RETURN_IF_ERROR(SetScalar(value[i], msg, f, elem_path, value));
      }
      return OkStatus();
    }
    return SetScalar(value, msg, f, path, key);
  }

 private:
  // map<string, string> fields (labels: {team: vision}): keys merge, as sections do; a
  // key set again replaces its value.
  Status ApplyStringMap(const YAML::Node& value, Message* msg, const FieldDescriptor* f, const std::string& path,
                        const YAML::Node& key) {
    if (!value.IsMap()) return Error(path, "expected a map of names to values, got " + Describe(value), value, key);
    const Reflection* refl = msg->GetReflection();
    const Descriptor* entry = f->message_type();
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (!it->first.IsScalar() || !(it->second.IsScalar() || it->second.IsNull()))
        return Error(path, "each label is name: value, got " + Describe(it->first) + ": " + Describe(it->second),
                     it->first, key);
      const std::string name = it->first.Scalar();
      const std::string v = it->second.IsNull() ? "" : it->second.Scalar();
      for (int k = 0; k < refl->FieldSize(*msg, f); ++k) {
        const Message& e = refl->GetRepeatedMessage(*msg, f, k);
        if (e.GetReflection()->GetString(e, entry->map_key()) == name) {
          refl->SwapElements(msg, f, k, refl->FieldSize(*msg, f) - 1);
          refl->RemoveLast(msg, f);
          break;
        }
      }
      Message* e = refl->AddMessage(msg, f);
      e->GetReflection()->SetString(e, entry->map_key(), name);
      e->GetReflection()->SetString(e, entry->map_value(), v);
      Record(path + "." + name, it->second, it->first);
    }
    return OkStatus();
  }

  Status SetScalar(const YAML::Node& n, Message* msg, const FieldDescriptor* f,
                   const std::string& path, const YAML::Node& fallback) {
    Scalar v;
    RETURN_IF_ERROR(Convert(n, f, path, fallback, &v));
    Record(path, n, fallback);
    const Reflection* r = msg->GetReflection();
    const bool add = f->is_repeated();
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        add ? r->AddInt32(msg, f, static_cast<int32_t>(v.i))
            : r->SetInt32(msg, f, static_cast<int32_t>(v.i));
        break;
      case FieldDescriptor::CPPTYPE_INT64: add ? r->AddInt64(msg, f, v.i) : r->SetInt64(msg, f, v.i); break;
      case FieldDescriptor::CPPTYPE_UINT32:
        add ? r->AddUInt32(msg, f, static_cast<uint32_t>(v.u))
            : r->SetUInt32(msg, f, static_cast<uint32_t>(v.u));
        break;
      case FieldDescriptor::CPPTYPE_UINT64: add ? r->AddUInt64(msg, f, v.u) : r->SetUInt64(msg, f, v.u); break;
      case FieldDescriptor::CPPTYPE_DOUBLE: add ? r->AddDouble(msg, f, v.d) : r->SetDouble(msg, f, v.d); break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        add ? r->AddFloat(msg, f, static_cast<float>(v.d)) : r->SetFloat(msg, f, static_cast<float>(v.d));
        break;
      case FieldDescriptor::CPPTYPE_BOOL: add ? r->AddBool(msg, f, v.b) : r->SetBool(msg, f, v.b); break;
      case FieldDescriptor::CPPTYPE_STRING: add ? r->AddString(msg, f, v.s) : r->SetString(msg, f, v.s); break;
      default: return Internal(path + ": unsupported field type");
    }
    return OkStatus();
  }

  Status Convert(const YAML::Node& n, const FieldDescriptor* f, const std::string& path,
                 const YAML::Node& fallback, Scalar* out) {
    const FieldDescriptor::CppType t = f->cpp_type();
    const std::string expected = std::string("expected ") + KindName(t) + ", got ";
    if (t == FieldDescriptor::CPPTYPE_STRING) {
      // `dir:` with nothing after it reads as null; for a string that plainly means "".
      if (n.IsNull()) return OkStatus();
      if (!n.IsScalar()) return Error(path, expected + Describe(n), n, fallback);
      out->s = n.Scalar();
      return OkStatus();
    }
    // A quoted "5" is a string in YAML; refusing it keeps the file's meaning unambiguous.
    if (!n.IsScalar() || n.Tag() == "!") return Error(path, expected + Describe(n), n, fallback);
    const std::string& s = n.Scalar();
    bool ok = false;
    switch (t) {
      case FieldDescriptor::CPPTYPE_INT32:
        ok = ParseInt(s, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), &out->i);
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        ok = ParseInt(s, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), &out->i);
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        ok = ParseUint(s, &out->u) && out->u <= std::numeric_limits<uint32_t>::max();
        break;
      case FieldDescriptor::CPPTYPE_UINT64: ok = ParseUint(s, &out->u); break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
      case FieldDescriptor::CPPTYPE_FLOAT: ok = ParseDouble(s, &out->d); break;
      case FieldDescriptor::CPPTYPE_BOOL: ok = ParseBool(s, &out->b); break;
      default: return Internal(path + ": unsupported field type");
    }
    if (!ok) {
      std::string why = expected + Describe(n);
      if (t == FieldDescriptor::CPPTYPE_INT32 || t == FieldDescriptor::CPPTYPE_INT64) {
        why += " (whole numbers only, within the 32/64-bit range)";
      }
      return Error(path, why, n, fallback);
    }
    return OkStatus();
  }

  std::string Where(const YAML::Node& n, const YAML::Node& fallback = YAML::Node()) const {
    if (override_mode_) return "--set " + source_;
    int line = n.Mark().line;
    if (line < 0 && fallback.IsDefined()) line = fallback.Mark().line;
    return line < 0 ? source_ : source_ + " line " + std::to_string(line + 1);
  }

  Status Error(const std::string& path, const std::string& what, const YAML::Node& n,
               const YAML::Node& fallback = YAML::Node()) const {
    return InvalidArgument(path + ": " + what + " (" + Where(n, fallback) + ")");
  }

  void Record(const std::string& path, const YAML::Node& n,
              const YAML::Node& fallback = YAML::Node()) {
    if (origins_ != nullptr && !path.empty()) (*origins_)[path] = Where(n, fallback);
  }

  void ForgetBelow(const std::string& prefix) {
    if (origins_ == nullptr) return;
    auto it = origins_->lower_bound(prefix);
    while (it != origins_->end() && it->first.compare(0, prefix.size(), prefix) == 0) {
      it = origins_->erase(it);
    }
  }

  std::string source_;
  bool override_mode_;
  FieldOrigins* origins_;
};

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

// yaml-cpp 0.7 loops forever, allocating, when a stray ',' (or similar) stands where a
// document should start: the parser reports the same empty document again and again and
// LoadAll collects them until memory runs out (jbeder/yaml-cpp#1040, fixed upstream by
// PR #1319). So documents are first counted by a bounded event pass that notices when
// the parser stops advancing; only a spec that passes it is loaded with YAML::Load.
class DocumentScan : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;  // where each document began
  void OnDocumentStart(const YAML::Mark& m) override { starts.push_back(m); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

std::string MarkText(const std::string& source, const YAML::Mark& m) {
  if (m.line < 0) return source;
  return source + " line " + std::to_string(m.line + 1) + ", column " + std::to_string(m.column + 1);
}

// Fails unless `text` holds at most one YAML document; sets *empty when it holds none.
Status CheckSingleDocument(const std::string& text, const std::string& source, bool* empty) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentScan scan;
  // Three documents are enough to tell a second real document from a stalled parser,
  // whose repeated documents all start at the same place.
  int docs = 0;
  while (docs < 3 && parser.HandleNextDocument(scan)) ++docs;
  *empty = docs == 0;
  if (docs < 2) return OkStatus();
  for (size_t i = 1; i < scan.starts.size(); ++i) {
    const YAML::Mark& m = scan.starts[i];
    if (m.pos != scan.starts[i - 1].pos) continue;
    const char c = m.pos >= 0 && static_cast<size_t>(m.pos) < text.size() ? text[m.pos] : '?';
    return InvalidArgument("malformed YAML (" + MarkText(source, m) + "): unexpected '" +
                           std::string(1, c) + "' where a value should start");
  }
  const YAML::Mark& second = scan.starts[1];
  return InvalidArgument("expected one YAML document in " + source +
                         ", found more than one (remove the '---' on line " +
                         std::to_string(second.line + 1) + ")");
}

}  // namespace

Status ApplyYamlText(const std::string& yaml_text, const std::string& source_name,
                     JobSpec* spec, FieldOrigins* origins) {
  YAML::Node root;
  try {
    bool empty = false;
    RETURN_IF_ERROR(CheckSingleDocument(yaml_text, source_name, &empty));
    // An empty file (or a file of comments) means "all defaults".
    if (empty) return OkStatus();
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    // e.mark is where the parser gave up; e.msg is yaml-cpp's own words.
    return InvalidArgument("malformed YAML (" + MarkText(source_name, e.mark) + "): " + e.msg);
  } catch (const std::exception& e) {
    return InvalidArgument("malformed YAML (" + source_name + "): " + e.what());
  }
  if (root.IsNull()) return OkStatus();
  try {
    Applier applier(source_name, /*override_mode=*/false, origins);
    return applier.ApplyMessage(root, spec, "");
  } catch (const std::exception& e) {
    return InvalidArgument("cannot read " + source_name + ": " + e.what());
  }
}

Status ApplyOverride(const std::string& text, JobSpec* spec, FieldOrigins* origins) {
  const std::string named = "override '" + text + "'";
  const size_t eq = text.find('=');
  if (eq == std::string::npos) return InvalidArgument(named + ": expected path.to.field=value");
  const std::string path = Trim(text.substr(0, eq));
  if (path.empty()) return InvalidArgument(named + ": the field path before '=' is empty");

  // Walk the dotted path down to the field; every step but the last must be a section.
  Message* msg = spec;
  const FieldDescriptor* field = nullptr;
  std::string walked;
  size_t start = 0;
  for (;;) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (field != nullptr && field->is_map() && dot == std::string::npos) {
      // labels.team=vision: one entry of a map field.
      try {
        const std::string value_text = text.substr(eq + 1);
        YAML::Node entry(YAML::NodeType::Map);
        entry[part] = value_text.empty() ? YAML::Node(YAML::NodeType::Null) : YAML::Load(value_text);
        Applier applier(text, /*override_mode=*/true, origins);
        return applier.ApplyField(entry, msg, field, walked, YAML::Node());
      } catch (const std::exception& e) {
        return InvalidArgument(named + ": malformed value: " + e.what());
      }
    }
    if (field != nullptr) {
      if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || field->is_repeated()) {
        return InvalidArgument(named + ": '" + walked +
                               "' is a value, not a section, so it has no '" + part + "'");
      }
      msg = msg->GetReflection()->MutableMessage(msg, field);
    }
    walked += (walked.empty() ? "" : ".") + part;
    field = msg->GetDescriptor()->FindFieldByName(part);
    if (field == nullptr) {
      return InvalidArgument(named + ": unknown field '" + walked + "'; expected one of: " +
                             FieldList(msg->GetDescriptor()));
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }

  try {
    const std::string value_text = text.substr(eq + 1);
    bool empty = false;
    Status single = CheckSingleDocument(value_text, "the value", &empty);
    if (!single.ok()) return InvalidArgument(named + ": " + single.message());
    // "checkpoint.dir=" has no document at all; read it as null, which a string takes as "".
    YAML::Node value = empty ? YAML::Node(YAML::NodeType::Null) : YAML::Load(value_text);
    Applier applier(text, /*override_mode=*/true, origins);
    return applier.ApplyField(value, msg, field, path, YAML::Node());
  } catch (const YAML::Exception& e) {
    return InvalidArgument(named + ": malformed value: " + e.msg);
  } catch (const std::exception& e) {
    return InvalidArgument(named + ": " + e.what());
  }
}

std::string FindOrigin(const FieldOrigins& origins, const std::string& path) {
  std::string p = path;
  while (!p.empty()) {
    if (auto it = origins.find(p); it != origins.end()) return it->second;
    const size_t cut = p.find_last_of(".[");
    if (cut == std::string::npos) break;
    p.resize(cut);
  }
  return "";
}

}  // namespace shoal::spec_internal
