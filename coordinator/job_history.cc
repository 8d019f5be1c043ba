// JobHistory: what the dashboard draws (job_history.h).
#include "coordinator/job_history.h"

namespace shoal {

void JobHistory::AddProgress(int64_t generation, int32_t world, const WorkerMetrics& m, int64_t unix_ms) {
  // Before its first reporting window a worker has steps but no loss or throughput yet
  // (both 0): such a point would draw a false dive to zero.
  if (m.samples_per_second() <= 0) return;
  if (m.step() == last_step_ && m.test_accuracy() == last_accuracy_ && m.evaluations() == last_evaluations_) return;
  ProgressPoint p;
  p.step = m.step();
  p.unix_ms = unix_ms;
  p.generation = generation;
  p.world = world;
  p.evaluations = m.evaluations();
  p.loss = m.loss();
  p.test_accuracy = m.test_accuracy();
  p.samples_per_second = m.samples_per_second();
  progress_.Add(p);
  last_step_ = m.step();
  last_accuracy_ = m.test_accuracy();
  last_evaluations_ = m.evaluations();
}

void JobHistory::AddWork(const std::string& member, const WorkerMetrics& m) {
  auto it = work_.find(member);
  if (it == work_.end()) {
    if (work_.size() >= kMaxWorkers) return;
    it = work_.emplace(member, WorkerSeries()).first;
  }
  if (m.step() == it->second.last_step || m.compute_seconds() <= 0) return;
  it->second.last_step = m.step();
  it->second.points.Add({m.step(), m.compute_seconds(), m.loader_wait_seconds()});
}

void JobHistory::MarkGeneration(const GenerationMark& mark) {
  if (generations_.size() >= kMaxMarks) generations_.erase(generations_.begin() + 1);  // keep the first
  generations_.push_back(mark);
}

void JobHistory::MarkStraggler(const StragglerMark& mark) {
  if (stragglers_.size() >= kMaxMarks) stragglers_.erase(stragglers_.begin());
  stragglers_.push_back(mark);
}

std::map<std::string, std::vector<WorkPoint>> JobHistory::work() const {
  std::map<std::string, std::vector<WorkPoint>> out;
  for (const auto& [member, series] : work_) out[member] = series.points.Points();
  return out;
}

}  // namespace shoal
