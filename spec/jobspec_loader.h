// Job spec loading: YAML file or text (+ "--set path=value" overrides) -> validated JobSpec.
// Every error is a Status (never an exception) naming the dotted field path and, when the
// value came from YAML, the file and line, so a person can fix the spec without guessing.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "jobspec.pb.h"

namespace shoal {

// Fills every field with its default, then applies the YAML, then the overrides, then
// validates. A missing file is NotFound naming the path; every other problem is
// InvalidArgument. The dataset folder is not checked here (the caller does that).
// Relative paths (data.dataset, data.trust, checkpoint.dir/sign_key/trust) written in
// the file are made absolute against the file's folder; those given in overrides
// against the working directory. ParseJobSpec leaves paths as written.
StatusOr<JobSpec> LoadJobSpecFile(const std::string& path,
                                  const std::vector<std::string>& overrides = {});

// As LoadJobSpecFile, for YAML already in memory; `source_name` is used in messages.
// Overrides look like "training.epochs=2" or "model.layers=[784,128,10]": the value is
// read as YAML, so lists and quoted strings work as they do in the file.
StatusOr<JobSpec> ParseJobSpec(const std::string& yaml_text,
                               const std::vector<std::string>& overrides = {},
                               const std::string& source_name = "<spec>");

// The spec a YAML file with no keys describes (see examples/fashion-mnist.yaml).
JobSpec DefaultJobSpec();

// Semantic checks (ranges, allowed names, cross-field rules). Errors name the field;
// they carry no line here because a bare message has no source (ParseJobSpec adds it).
Status ValidateJobSpec(const JobSpec& spec);

// Normalised YAML: every field, in proto order, block style, strings double-quoted,
// doubles in shortest round-trip form. ParseJobSpec(JobSpecToYaml(s)) == s.
std::string JobSpecToYaml(const JobSpec& spec);

// SHA-256 hex of JobSpecToYaml: equal for specs that mean the same, whatever the layout.
std::string JobSpecDigest(const JobSpec& spec);

}  // namespace shoal
