// Precision counts a flag as right when the record carries any planted poison (a label
// filter catching a backdoor is a correct catch, not a false alarm); recall is per kind.
// Conflicting duplicates are scored over copies and sources together, because the filter
// is meant to hold back every copy of content whose label is disputed.
#include "bench/poison/metrics.h"

namespace shoal::poison {

namespace {
const Kind kKinds[] = {kFlip, kBackdoor, kDupCopy, kDupSource, kCorrupt};
const char* const kFilters[] = {"schema", "exact", "near", "outliers", "label"};

std::set<int64_t> Union(const std::map<std::string, std::set<int64_t>>& flags, const std::vector<std::string>& names) {
  std::set<int64_t> out;
  for (const auto& n : names) {
    auto it = flags.find(n);
    if (it != flags.end()) out.insert(it->second.begin(), it->second.end());
  }
  return out;
}
}  // namespace

std::vector<FilterScore> ScoreFilters(const PlantedSet& set, const std::map<std::string, std::set<int64_t>>& flags,
                                      const std::map<std::string, std::set<int64_t>>& clean_flags) {
  std::map<Kind, int64_t> totals;
  for (uint8_t k : set.kind) ++totals[static_cast<Kind>(k)];
  std::vector<FilterScore> out;
  for (const char* name : kFilters) {
    FilterScore s;
    s.filter = name;
    auto it = flags.find(name);
    std::map<Kind, int64_t> hit;
    if (it != flags.end()) {
      auto cit = clean_flags.find(name);
      for (int64_t id : it->second) {
        ++s.flagged;
        Kind k = static_cast<Kind>(set.kind[id]);
        ++hit[k];
        if (k != kClean) ++s.planted;
        else if (cit != clean_flags.end() && cit->second.count(set.origin[id])) ++s.preexisting;
      }
    }
    s.precision = s.flagged ? static_cast<double>(s.planted) / s.flagged : 0.0;
    for (Kind k : kKinds) s.recall[KindName(k)] = totals[k] ? static_cast<double>(hit[k]) / totals[k] : 0.0;
    out.push_back(s);
  }
  return out;
}

std::vector<CategoryScore> ScoreCategories(const PlantedSet& set,
                                           const std::map<std::string, std::set<int64_t>>& flags) {
  struct Def {
    const char* name;
    std::vector<std::string> filters;
    std::vector<Kind> kinds;
    double recall_target, precision_target;
  };
  const std::vector<Def> defs = {
      {"(a) label flips", {"label"}, {kFlip}, 0.8, 0.8},
      {"(b) backdoor", {"outliers", "label"}, {kBackdoor}, 0.0, 0.0},
      {"(c) conflicting dups", {"exact", "near"}, {kDupCopy, kDupSource}, 0.99, 0.99},
      {"(d) corrupt", {"schema"}, {kCorrupt}, 0.99, 0.99},
      {"all planted", {"schema", "exact", "near", "outliers", "label"},
       {kFlip, kBackdoor, kDupCopy, kDupSource, kCorrupt}, 0.0, 0.0},
  };
  std::vector<CategoryScore> out;
  for (const Def& d : defs) {
    CategoryScore c;
    c.name = d.name;
    for (const auto& f : d.filters) {
      if (!c.filters.empty()) c.filters += "+";
      c.filters += f;
    }
    c.recall_target = d.recall_target;
    c.precision_target = d.precision_target;
    std::set<int64_t> flagged = Union(flags, d.filters);
    c.flagged = static_cast<int64_t>(flagged.size());
    int64_t planted_flagged = 0;
    for (int64_t id : flagged) planted_flagged += set.kind[id] != kClean;
    for (int64_t i = 0; i < set.n(); ++i) {
      bool in = false;
      for (Kind k : d.kinds) in |= set.kind[i] == k;
      if (!in) continue;
      ++c.truth;
      c.caught += flagged.count(i) > 0;
    }
    c.recall = c.truth ? static_cast<double>(c.caught) / c.truth : 0.0;
    c.precision = c.flagged ? static_cast<double>(planted_flagged) / c.flagged : 0.0;
    out.push_back(c);
  }
  return out;
}

namespace {
bool IsAttack(const PlantedSet& set, int64_t i, Trigger trigger) {
  return set.kind[i] == kBackdoor && set.variant[i] == trigger;
}

FilterOnAttack ScoreFilterOnAttack(const PlantedSet& set, const std::string& filter, const std::set<int64_t>& flagged,
                                   Trigger trigger, int64_t planted) {
  FilterOnAttack f;
  f.filter = filter;
  int64_t clean = 0;
  for (int64_t id : flagged) {
    if (IsAttack(set, id, trigger)) ++f.caught;
    else if (set.kind[id] == kClean) ++clean;
  }
  f.recall = planted ? static_cast<double>(f.caught) / planted : 0.0;
  f.precision = f.caught + clean ? static_cast<double>(f.caught) / (f.caught + clean) : 0.0;
  return f;
}
}  // namespace

std::vector<AttackScore> ScoreAttacks(const PlantedSet& set, const std::map<std::string, std::set<int64_t>>& flags,
                                      const std::vector<BackdoorAttack>& attacks) {
  std::vector<std::string> all(std::begin(kFilters), std::end(kFilters));
  const std::set<int64_t> any = Union(flags, all);
  std::vector<AttackScore> out;
  for (const BackdoorAttack& a : attacks) {
    AttackScore s;
    s.attack = a;
    for (int64_t i = 0; i < set.n(); ++i) s.planted += IsAttack(set, i, a.trigger);
    for (const std::string& name : all)
      s.filters.push_back(ScoreFilterOnAttack(set, name, Union(flags, {name}), a.trigger, s.planted));
    s.filters.push_back(ScoreFilterOnAttack(set, "any", any, a.trigger, s.planted));
    out.push_back(s);
  }
  return out;
}

}  // namespace shoal::poison
