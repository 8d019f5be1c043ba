// `shoalctl validate SPEC`: checks a spec (with --set overrides) and prints it normalised.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/file_util.h"
#include "spec/jobspec_loader.h"

namespace shoal {

void RegisterValidateCommand(CLI::App& app, int* exit_code) {
  struct Options {
    std::string spec;
    std::vector<std::string> overrides;
    bool json = false, print = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("validate", "Check a job spec; exit 0 if valid, 2 with the field and line if not");
  cmd->add_option("spec", o->spec, "job spec YAML file")->required();
  cmd->add_option("--set", o->overrides, "override a spec field: path.to.field=value (repeatable)");
  cmd->add_flag("--json", o->json, "print {valid, error, digest} as JSON");
  cmd->add_flag("--print", o->print, "print the normalised spec with every default filled in");
  cmd->callback([o, exit_code] {
    auto spec = LoadJobSpecFile(o->spec, o->overrides);
    std::string warning;
    if (spec.ok() && !PathExists(spec->data().dataset()))
      warning = "data.dataset: folder " + spec->data().dataset() + " does not exist on this machine";
    if (o->json) {
      nlohmann::json j = {{"valid", spec.ok()}, {"spec", o->spec}};
      if (!spec.ok()) j["error"] = spec.status().message();
      if (spec.ok()) j["digest"] = JobSpecDigest(*spec);
      if (!warning.empty()) j["warning"] = warning;
      std::cout << j.dump(2) << std::endl;
      *exit_code = spec.ok() ? kExitOk : kExitBadInput;
      return;
    }
    if (!spec.ok()) {
      *exit_code = ReportError(spec.status());
      return;
    }
    if (o->print) std::cout << JobSpecToYaml(*spec);
    std::cout << o->spec << ": valid (digest " << JobSpecDigest(*spec).substr(0, 16) << ")" << std::endl;
    if (!warning.empty()) std::cerr << "warning: " << warning << std::endl;
    *exit_code = kExitOk;
  });
}

}  // namespace shoal
