// A job's recent history in the coordinator's memory, for the dashboard: rank 0's
// progress (loss, test accuracy, samples/s against step), each worker's own work time,
// and the generation changes and straggler flags to mark on the charts. Bounded: every
// series keeps at most a fixed number of points, halving its resolution when full
// (keeping the first and the newest), so a long job costs the same memory as a short
// one. Not persisted: a restarted coordinator starts a new history.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "control.pb.h"

namespace shoal {

// At most `capacity` points. When full, every other point goes and from then on only
// every `stride`-th offered point is kept: the series spans the whole run at an even,
// coarser resolution. The newest offered point is always kept as the last one (the
// chart's right end is now).
template <typename T>
class DecimatedSeries {
 public:
  explicit DecimatedSeries(size_t capacity = 2048) : capacity_(capacity < 4 ? 4 : capacity) {}
  void Add(const T& p) {
    if (points_.empty() || ++offered_ % stride_ == 0) {
      points_.push_back(p);
      have_pending_ = false;
    } else {
      pending_ = p;  // shown as the newest until a kept point replaces it
      have_pending_ = true;
    }
    if (points_.size() >= capacity_) {
      std::vector<T> kept;
      for (size_t i = 0; i < points_.size(); i += 2) kept.push_back(points_[i]);
      if (points_.size() % 2 == 0) {  // the newest was dropped: it stays the newest shown
        pending_ = points_.back();
        have_pending_ = true;
      }
      points_.swap(kept);
      stride_ *= 2;
      offered_ = 0;
    }
  }
  // The kept points plus the newest one.
  std::vector<T> Points() const {
    std::vector<T> out = points_;
    if (have_pending_) out.push_back(pending_);
    return out;
  }
  size_t stride() const { return stride_; }

 private:
  size_t capacity_;
  size_t stride_ = 1;
  uint64_t offered_ = 0;
  std::vector<T> points_;
  T pending_{};
  bool have_pending_ = false;
};

struct ProgressPoint {
  int64_t step = 0;
  int64_t unix_ms = 0;
  int64_t generation = 0;
  int32_t world = 0;
  int32_t evaluations = 0;  // rank 0's evaluations so far: two that score the same are still two
  double loss = 0;
  double test_accuracy = -1;  // < 0: no evaluation yet
  double samples_per_second = 0;
};

struct WorkPoint {
  int64_t step = 0;
  double compute_seconds = 0;
  double loader_wait_seconds = 0;
};

struct GenerationMark {
  int64_t generation = 0;
  int64_t step = 0;  // the step the generation trains from
  int64_t unix_ms = 0;
  int32_t world = 0;
  std::string cause;
};

struct StragglerMark {
  std::string member;
  int32_t rank = -1;
  int64_t step = 0;
  int64_t unix_ms = 0;
  double ratio = 1;
  bool flagged = true;  // false: cleared
};

class JobHistory {
 public:
  // Series sizes: rank 0's progress keeps 2,048 points; each worker's work 512, for at
  // most 64 workers (beyond that the chart would be unreadable anyway; metrics still
  // cover every worker).
  static constexpr size_t kProgressPoints = 2048;
  static constexpr size_t kWorkPoints = 512;
  static constexpr size_t kMaxWorkers = 64;
  static constexpr size_t kMaxMarks = 512;

  // Rank 0's heartbeat: a point when its step moved (or its test accuracy changed).
  void AddProgress(int64_t generation, int32_t world, const WorkerMetrics& m, int64_t unix_ms);
  // Any worker's heartbeat: a point when its step moved.
  void AddWork(const std::string& member, const WorkerMetrics& m);
  void MarkGeneration(const GenerationMark& mark);
  void MarkStraggler(const StragglerMark& mark);
  // The step of the newest progress point (0 before any).
  int64_t last_step() const { return last_step_; }

  std::vector<ProgressPoint> progress() const { return progress_.Points(); }
  std::map<std::string, std::vector<WorkPoint>> work() const;
  const std::vector<GenerationMark>& generations() const { return generations_; }
  const std::vector<StragglerMark>& stragglers() const { return stragglers_; }

 private:
  struct WorkerSeries {
    DecimatedSeries<WorkPoint> points{kWorkPoints};
    int64_t last_step = -1;
  };
  DecimatedSeries<ProgressPoint> progress_{kProgressPoints};
  int64_t last_step_ = -1;
  double last_accuracy_ = -1;
  int32_t last_evaluations_ = 0;
  std::map<std::string, WorkerSeries> work_;
  std::vector<GenerationMark> generations_;
  std::vector<StragglerMark> stragglers_;
};

}  // namespace shoal
