// An in-process NcclApi for CPU tests: ranks as threads meet by unique id, streams are
// queues of actions run in order when polled, and knobs simulate what a GPU cluster
// does to us (a peer that never arrives or never calls, an async error, no device).
#pragma once

#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "collectives/nccl/nccl_api.h"

namespace shoal::nccl::testing {

class FakeNcclApi : public NcclApi {
 public:
  // Knobs and observations.
  std::atomic<int> device_count{1};
  std::atomic<int> aborts{0}, destroys{0}, inits{0};
  std::atomic<bool> hang_ops{false};  // collectives never finish (a peer hung mid-step)
  void InjectAsyncError(const std::string& message) {
    std::lock_guard<std::mutex> lock(mu_);
    async_error_ = message;
  }
  // An action on `stream` that completes only once *gate is true (a model's backward
  // still writing the gradients).
  void EnqueueGate(StreamHandle stream, const std::atomic<bool>* gate) {
    Push(stream, [gate] { return gate->load(); }, [] {});
  }

  int DeviceCount() override { return device_count.load(); }
  Status SetDevice(int) override { return OkStatus(); }

  Status GetUniqueId(std::string* id) override {
    std::lock_guard<std::mutex> lock(mu_);
    *id = std::string(128, '\0');
    const std::string tag = "fake-id-" + std::to_string(next_uid_++);
    std::memcpy(id->data(), tag.data(), tag.size());
    return OkStatus();
  }
  Status CommInitRank(int nranks, const std::string& id, int rank, CommHandle* comm) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto& group = groups_[id];
    if (!group) group = std::make_shared<Group>();
    group->nranks = nranks;
    group->joined++;
    comms_.push_back(std::make_unique<Comm>());
    comms_.back()->group = group;
    comms_.back()->rank = rank;
    comms_.back()->nranks = nranks;
    *comm = comms_.back().get();
    inits++;
    return OkStatus();
  }
  AsyncState CommGetAsyncError(CommHandle comm, std::string* error) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!async_error_.empty()) {
      *error = async_error_;
      return AsyncState::kError;
    }
    auto* c = static_cast<Comm*>(comm);
    std::lock_guard<std::mutex> glock(c->group->mu);
    return c->group->joined < c->nranks ? AsyncState::kInProgress : AsyncState::kReady;
  }
  void CommAbort(CommHandle comm) override {
    static_cast<Comm*>(comm)->aborted = true;
    aborts++;
  }
  Status CommFinalize(CommHandle) override { return OkStatus(); }
  Status CommDestroy(CommHandle comm) override {
    static_cast<Comm*>(comm)->aborted = true;
    destroys++;
    return OkStatus();
  }
  Status GroupStart() override { return OkStatus(); }
  Status GroupEnd() override { return OkStatus(); }

  Status AllReduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op, CommHandle comm,
                   StreamHandle stream) override {
    if (dtype != DType::kF32) return Unimplemented("fake NCCL reduces f32 only");
    return Collective(comm, stream, send, count * 4, [=](const std::vector<std::vector<char>>& in) {
      std::vector<float> acc(count, 0.0f);
      for (const auto& buf : in) {
        const float* v = reinterpret_cast<const float*>(buf.data());
        for (size_t i = 0; i < count; ++i) acc[i] += v[i];
      }
      if (op == ReduceOp::kAverage) for (float& a : acc) a /= static_cast<float>(in.size());
      std::memcpy(recv, acc.data(), count * 4);
    });
  }
  Status AllGather(const void* send, void* recv, size_t bytes, CommHandle comm, StreamHandle stream) override {
    return Collective(comm, stream, send, bytes, [=](const std::vector<std::vector<char>>& in) {
      for (size_t r = 0; r < in.size(); ++r) std::memcpy(static_cast<char*>(recv) + r * bytes, in[r].data(), bytes);
    });
  }
  Status Broadcast(const void* send, void* recv, size_t bytes, int root, CommHandle comm,
                   StreamHandle stream) override {
    return Collective(comm, stream, send, bytes, [=](const std::vector<std::vector<char>>& in) {
      std::memcpy(recv, in[root].data(), bytes);
    });
  }

  Status StreamCreate(StreamHandle* stream) override {
    std::lock_guard<std::mutex> lock(mu_);
    streams_.push_back(std::make_unique<Stream>());
    *stream = streams_.back().get();
    return OkStatus();
  }
  void StreamDestroy(StreamHandle) override {}
  Status EventCreate(EventHandle* event) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::make_unique<Event>());
    *event = events_.back().get();
    return OkStatus();
  }
  void EventDestroy(EventHandle) override {}
  Status EventRecord(EventHandle event, StreamHandle stream) override {
    auto* e = static_cast<Event*>(event);
    auto* s = static_cast<Stream*>(stream);
    std::lock_guard<std::recursive_mutex> lock(s->mu);
    e->stream = s;
    e->target = s->enqueued;
    return OkStatus();
  }
  Status StreamWaitEvent(StreamHandle stream, EventHandle event) override {
    auto* e = static_cast<Event*>(event);
    Stream* s = e->stream;
    const uint64_t target = e->target;
    Push(stream, [this, s, target] { return s == nullptr || Progress(s) >= target; }, [] {});
    return OkStatus();
  }
  StatusOr<bool> EventDone(EventHandle event) override {
    auto* e = static_cast<Event*>(event);
    return e->stream == nullptr || Progress(e->stream) >= e->target;
  }

  StatusOr<bool> IsDevicePointer(const void* p) override {
    std::lock_guard<std::mutex> lock(mu_);
    return device_ptrs_.count(p) > 0;
  }
  Status Malloc(void** p, size_t bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto buf = std::make_unique<char[]>(bytes);
    *p = buf.get();
    device_ptrs_.insert(*p);
    device_mem_[*p] = std::move(buf);
    return OkStatus();
  }
  void Free(void* p) override {
    std::lock_guard<std::mutex> lock(mu_);
    device_ptrs_.erase(p);
    device_mem_.erase(p);
  }
  Status MemcpyAsync(void* dst, const void* src, size_t bytes, StreamHandle stream) override {
    Push(stream, [] { return true; }, [=] { std::memcpy(dst, src, bytes); });
    return OkStatus();
  }
  Status Memcpy(void* dst, const void* src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
    return OkStatus();
  }

 private:
  struct Slot {
    std::vector<std::vector<char>> inputs;
    int arrived = 0;
  };
  struct Group {
    std::mutex mu;
    int nranks = 0, joined = 0;
    std::map<uint64_t, Slot> slots;
  };
  struct Comm {
    std::shared_ptr<Group> group;
    int rank = 0, nranks = 0;
    uint64_t seq = 0;
    std::atomic<bool> aborted{false};
  };
  struct Action {
    std::function<bool()> ready;
    std::function<void()> run;
  };
  struct Stream {
    std::recursive_mutex mu;
    std::deque<Action> queue;
    uint64_t enqueued = 0, executed = 0;
  };
  struct Event {
    Stream* stream = nullptr;
    uint64_t target = 0;
  };

  void Push(StreamHandle stream, std::function<bool()> ready, std::function<void()> run) {
    auto* s = static_cast<Stream*>(stream);
    std::lock_guard<std::recursive_mutex> lock(s->mu);
    s->queue.push_back({std::move(ready), std::move(run)});
    s->enqueued++;
  }
  // Runs the ready prefix of the queue; returns how many actions have run.
  uint64_t Progress(Stream* s) {
    std::lock_guard<std::recursive_mutex> lock(s->mu);
    while (!s->queue.empty() && s->queue.front().ready()) {
      s->queue.front().run();
      s->queue.pop_front();
      s->executed++;
    }
    return s->executed;
  }
  // The op joins slot `seq` of its group when it reaches the head of its stream (so its
  // input is what stream order says), and completes once every rank has joined.
  Status Collective(CommHandle comm, StreamHandle stream, const void* send, size_t bytes,
                    std::function<void(const std::vector<std::vector<char>>&)> finish) {
    auto* c = static_cast<Comm*>(comm);
    const uint64_t seq = c->seq++;
    auto joined = std::make_shared<bool>(false);
    Push(stream,
         [=, this] {
           if (c->aborted || hang_ops) return false;
           std::lock_guard<std::mutex> lock(c->group->mu);
           Slot& slot = c->group->slots[seq];
           if (!*joined) {
             slot.inputs.resize(c->nranks);
             const char* p = static_cast<const char*>(send);
             slot.inputs[c->rank].assign(p, p + bytes);
             slot.arrived++;
             *joined = true;
           }
           return slot.arrived == c->nranks;
         },
         [=] {
           std::lock_guard<std::mutex> lock(c->group->mu);
           finish(c->group->slots[seq].inputs);
         });
    return OkStatus();
  }

  std::mutex mu_;
  std::string async_error_;
  int next_uid_ = 0;
  std::map<std::string, std::shared_ptr<Group>> groups_;
  std::vector<std::unique_ptr<Comm>> comms_;
  std::vector<std::unique_ptr<Stream>> streams_;
  std::vector<std::unique_ptr<Event>> events_;
  std::set<const void*> device_ptrs_;
  std::map<const void*, std::unique_ptr<char[]>> device_mem_;
};

}  // namespace shoal::nccl::testing
