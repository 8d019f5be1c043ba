// Pieces shared by the spec loader's files (not part of the public API): where each field's
// value came from, the YAML/override appliers, and validation that can cite those origins.
#pragma once

#include <map>
#include <string>

#include "common/status.h"
#include "jobspec.pb.h"

namespace shoal::spec_internal {

// Dotted path ("training.epochs", "model.layers[1]") -> where its value was written
// ("fashion.yaml line 12" or "--set training.epochs=0"). Kept while parsing so that a
// semantic error found after parsing can still point at the line to fix.
using FieldOrigins = std::map<std::string, std::string>;

// Origin of `path`, or of its nearest ancestor that has one ("" if none).
std::string FindOrigin(const FieldOrigins& origins, const std::string& path);

// Applies one YAML document on top of `spec` (keys absent from the YAML keep their value).
Status ApplyYamlText(const std::string& yaml_text, const std::string& source_name,
                     JobSpec* spec, FieldOrigins* origins);

// Applies one "path.to.field=value" override on top of `spec`.
Status ApplyOverride(const std::string& override_text, JobSpec* spec, FieldOrigins* origins);

// ValidateJobSpec, citing origins when `origins` is non-null.
Status Validate(const JobSpec& spec, const FieldOrigins* origins);

// Shortest text that reads back as the same double ("0.05", "1e-07", ".inf", ".nan").
std::string FormatDouble(double v);

}  // namespace shoal::spec_internal
