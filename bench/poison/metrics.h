// Scoring a scan against the planted truth: per filter precision and recall per poison
// kind, the four category figures the issue sets targets for, and each backdoor attack
// on its own.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "bench/poison/plant.h"

namespace shoal::poison {

struct FilterScore {
  std::string filter;
  int64_t flagged = 0;
  int64_t planted = 0;       // flagged records that carry any planted poison
  int64_t preexisting = 0;   // flagged clean records this filter also flags in the unpoisoned set
  double precision = 0;      // planted / flagged
  std::map<std::string, double> recall;  // per poison kind
};

struct CategoryScore {
  std::string name;          // "(a) label flips"
  std::string filters;       // the filter(s) meant to catch it
  int64_t truth = 0;
  int64_t caught = 0;
  int64_t flagged = 0;       // records flagged by those filters
  double recall = 0, precision = 0;
  double recall_target = 0, precision_target = 0;
  bool met() const { return recall >= recall_target && precision >= precision_target; }
};

// How the filters catch one backdoor attack (the records stamped with its trigger).
// Precision for one attack leaves the other planted poison out of the count: caught /
// (caught + clean records the filter flags), the precision the filter would have if
// only this attack had been planted.
struct FilterOnAttack {
  std::string filter;        // a filter name, or "any" for every filter together
  int64_t caught = 0;
  double recall = 0, precision = 0;
};
struct AttackScore {
  BackdoorAttack attack;
  int64_t planted = 0;
  std::vector<FilterOnAttack> filters;  // every filter, then "any"
};

// `flags`: filter name -> flagged record ids (ids index `set`). `clean_flags`: filter ->
// flagged indices of the unpoisoned set (for the pre-existing column; may be empty).
std::vector<FilterScore> ScoreFilters(const PlantedSet& set, const std::map<std::string, std::set<int64_t>>& flags,
                                      const std::map<std::string, std::set<int64_t>>& clean_flags);
std::vector<CategoryScore> ScoreCategories(const PlantedSet& set,
                                           const std::map<std::string, std::set<int64_t>>& flags);
// One score per attack in `attacks` (see BackdoorAttacks), in that order.
std::vector<AttackScore> ScoreAttacks(const PlantedSet& set, const std::map<std::string, std::set<int64_t>>& flags,
                                      const std::vector<BackdoorAttack>& attacks);

}  // namespace shoal::poison
