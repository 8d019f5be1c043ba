// MpiCommunicator: blocking MPI collectives on a progress thread the caller waits on
// with a deadline (MPI_THREAD_MULTIPLE), else non-blocking ones polled with MPI_Test.
// Every MPI call is checked and turned into a Status with file:line.
#include "collectives/mpi/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <deque>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "collectives/dtype.h"
#include "collectives/mpi/mpi_progress.h"
#include "common/log.h"

namespace shoal {

using mpi_detail::Job;
using mpi_detail::Progress;

namespace {

using Clock = std::chrono::steady_clock;

Status MpiResult(int rc, const char* call, const char* file, int line) {
  if (rc == MPI_SUCCESS) return OkStatus();
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) {
    len = std::snprintf(text, sizeof(text), "MPI error code %d", rc);
  }
  return Internal(fmt::format("{}:{}: {} failed: {}", file, line, call, std::string(text, len)));
}

#define SHOAL_MPI_CHECK(call) RETURN_IF_ERROR(MpiResult((call), #call, __FILE__, __LINE__))

// MPI counts are int; longer buffers are moved in pieces of at most this many
// elements.
constexpr size_t kMaxPiece = INT_MAX;

// AllGather's and AllToAll's arguments: buffers present, and a piece per rank that fits
// MPI's int count.
Status CheckPieces(const char* name, const void* send, const void* recv, size_t bytes_per_rank) {
  if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr)) {
    return InvalidArgument(fmt::format("{}: null buffer", name));
  }
  if (bytes_per_rank > kMaxPiece) {
    return InvalidArgument(fmt::format("{}: {} bytes per rank exceeds MPI's int count", name, bytes_per_rank));
  }
  return OkStatus();
}

// Below MPI_THREAD_MULTIPLE, MPI may be entered by one thread at a time only, so
// every MPI call in this file then takes this process-wide lock.
std::mutex g_mpi_mu;
std::atomic<int> g_thread_level{-1};

class MpiLock {
 public:
  MpiLock() {
    if (g_thread_level.load() < MPI_THREAD_MULTIPLE) lock_ = std::unique_lock<std::mutex>(g_mpi_mu);
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

const char* ThreadLevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
  }
  return "uninitialized";
}

// How long the destructor waits for a collective still running on the progress
// thread (one the caller gave up on) before detaching it.
constexpr std::chrono::seconds kTeardownGrace{10};

// Memory an unfinished MPI request may still write is never freed: a leak is the
// only safe outcome once the communicator (or MPI) is gone.
void LeakForever(std::shared_ptr<void> memory) { new std::shared_ptr<void>(std::move(memory)); }

}  // namespace

struct MpiCommunicator::State {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
  std::mutex abandoned_mu;
  std::vector<std::pair<MPI_Request, std::shared_ptr<void>>> abandoned;
  std::shared_ptr<Progress> progress;  // set at construction under MPI_THREAD_MULTIPLE
};

std::string MpiThreadLevel() { return ThreadLevelName(g_thread_level.load()); }

StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator(
    const std::optional<LinkEmulation>& emulation_or_env) {
  int initialized = 0, finalized = 0;
  SHOAL_MPI_CHECK(MPI_Initialized(&initialized));
  SHOAL_MPI_CHECK(MPI_Finalized(&finalized));
  if (finalized) return FailedPrecondition("MakeMpiCommunicator: MPI was already finalized");
  const StatusOr<LinkEmulation> emulation =
      emulation_or_env ? StatusOr<LinkEmulation>(*emulation_or_env) : LinkEmulationFromEnv();
  if (!emulation.ok()) return emulation.status().WithContext("MakeMpiCommunicator");
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    SHOAL_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
    SHOAL_LOG_INFO("MPI initialized: asked for MPI_THREAD_MULTIPLE, provided {}",
                   ThreadLevelName(provided));
  } else {
    SHOAL_MPI_CHECK(MPI_Query_thread(&provided));
  }
  g_thread_level.store(provided);
  if (provided < MPI_THREAD_SERIALIZED) {
    return FailedPrecondition(fmt::format(
        "MPI provides only {}; Shoal needs MPI_THREAD_SERIALIZED or better because Abort() "
        "and collectives may run on different threads (initialise MPI with "
        "MPI_Init_thread, or let Shoal do it)",
        ThreadLevelName(provided)));
  }
  auto state = std::make_unique<MpiCommunicator::State>();
  {
    MpiLock lock;
    // A private duplicate keeps our collectives from matching anyone else's on
    // MPI_COMM_WORLD; ERRORS_RETURN turns failures into codes instead of abort().
    SHOAL_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &state->comm));
    SHOAL_MPI_CHECK(MPI_Comm_set_errhandler(state->comm, MPI_ERRORS_RETURN));
    SHOAL_MPI_CHECK(MPI_Comm_rank(state->comm, &state->rank));
    SHOAL_MPI_CHECK(MPI_Comm_size(state->comm, &state->size));
  }
  if (provided >= MPI_THREAD_MULTIPLE && state->size > 1) {
    state->progress = std::make_shared<Progress>();
    state->progress->thread = std::thread(&Progress::Loop, state->progress);
  }
  auto comm = std::make_unique<MpiCommunicator>(std::move(state));
  comm->SetLinkEmulation(*emulation);
  return std::unique_ptr<Communicator>(std::move(comm));
}

void FinalizeMpiIfInitialized() {
  int initialized = 0, finalized = 0;
  if (MPI_Initialized(&initialized) != MPI_SUCCESS || !initialized) return;
  if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized) return;
  const int rc = MPI_Finalize();
  if (rc != MPI_SUCCESS) {
    SHOAL_LOG_WARN("{}", MpiResult(rc, "MPI_Finalize()", __FILE__, __LINE__).ToString());
  }
}

MpiCommunicator::MpiCommunicator(std::unique_ptr<State> state) : state_(std::move(state)) {}

MpiCommunicator::~MpiCommunicator() {
  if (auto progress = state_->progress) {
    bool stuck = false;
    {
      std::unique_lock<std::mutex> lock(progress->mu);
      progress->stop = true;
      progress->queue.clear();  // queued behind a failure: never issued, never run
      progress->work_cv.notify_all();
      // A job still running belongs to a collective that timed out or was aborted
      // here; it may be writing the caller's buffer, so give the other ranks a grace
      // period to complete it before giving up on the thread.
      stuck = !progress->done_cv.wait_for(lock, kTeardownGrace, [&] { return !progress->busy; });
    }
    if (stuck) {
      progress->thread.detach();
      // Freeing the communicator under a running blocking collective is erroneous.
      SHOAL_LOG_WARN("MpiCommunicator destroyed with a collective still blocked in MPI after "
                     "{} s; its progress thread is detached and the MPI communicator leaked",
                     kTeardownGrace.count());
      for (auto& entry : state_->abandoned) LeakForever(std::move(entry.second));
      return;
    }
    progress->thread.join();
  }
  int finalized = 1;
  if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized) {
    for (auto& entry : state_->abandoned) LeakForever(std::move(entry.second));
    return;
  }
  MpiLock lock;
  for (auto& [request, memory] : state_->abandoned) {
    int done = 0;
    if (MPI_Test(&request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done) {
      LeakForever(std::move(memory));
    }
  }
  // Legal with requests still pending: MPI frees the communicator once they finish.
  const int rc = MPI_Comm_free(&state_->comm);
  if (rc != MPI_SUCCESS) {
    SHOAL_LOG_WARN("{}", MpiResult(rc, "MPI_Comm_free()", __FILE__, __LINE__).ToString());
  }
}

int MpiCommunicator::rank() const { return state_->rank; }
int MpiCommunicator::size() const { return state_->size; }

Status MpiCommunicator::Complete(const char* name, const CollectiveOptions& opts,
                                 Clock::time_point deadline,
                                 const std::function<Status(void* request)>& start,
                                 std::shared_ptr<void> scratch) {
  MPI_Request request = MPI_REQUEST_NULL;
  {
    MpiLock lock;
    const Status started = start(&request);
    if (!started.ok()) return MarkBroken(started.WithContext(name));
  }
  // Spin briefly (small collectives finish in microseconds), then back off to at
  // most 1 ms between polls so a waiting rank does not burn a core.
  auto pause = std::chrono::microseconds(0);
  for (;;) {
    int done = 0;
    {
      MpiLock lock;
      const int rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) {
        return MarkBroken(MpiResult(rc, "MPI_Test", __FILE__, __LINE__).WithContext(name));
      }
    }
    if (done) return OkStatus();
    const bool aborted = latch_.aborted();
    if (aborted || Clock::now() >= deadline) {
      {
        std::lock_guard<std::mutex> lock(state_->abandoned_mu);
        state_->abandoned.emplace_back(request, std::move(scratch));
      }
      if (aborted) return Aborted(fmt::format("{}(tag={}) aborted", name, opts.tag));
      return MarkBroken(DeadlineExceeded(fmt::format(
          "{}(tag={}) timed out after {} ms waiting for the other ranks of the MPI "
          "communicator; MPI cannot cancel a collective, so this communicator is now "
          "unusable and must be torn down",
          name, opts.tag, opts.timeout.count())));
    }
    if (pause.count() == 0) {
      std::this_thread::yield();
      pause = std::chrono::microseconds(1);
    } else {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }
}

bool MpiCommunicator::UseProgressThread() const { return state_->progress != nullptr; }

Status MpiCommunicator::RunBlocking(const char* name, const CollectiveOptions& opts,
                                    Clock::time_point deadline, std::function<Status()> body) {
  auto& progress = state_->progress;  // made with the communicator (MULTIPLE only)
  auto job = std::make_shared<Job>();
  job->body = std::move(body);
  std::unique_lock<std::mutex> lock(progress->mu);
  progress->queue.push_back(job);
  progress->work_cv.notify_one();
  // Abort() notifies done_cv under the same mutex, so a flag set before this wait
  // starts is seen by the predicate and one set later wakes it.
  const bool finished = progress->done_cv.wait_until(
      lock, deadline, [&] { return job->done || latch_.aborted(); });
  if (job->done) {
    lock.unlock();
    if (!job->result.ok()) return MarkBroken(job->result.WithContext(name));
    return OkStatus();
  }
  lock.unlock();
  if (finished) return Aborted(fmt::format("{}(tag={}) aborted", name, opts.tag));
  return MarkBroken(DeadlineExceeded(fmt::format(
      "{}(tag={}) timed out after {} ms waiting for the other ranks of the MPI "
      "communicator; MPI cannot cancel a collective, so this communicator is now "
      "unusable and must be torn down (the caller's buffer may still be written until "
      "the other ranks complete the collective)",
      name, opts.tag, opts.timeout.count())));
}

Status MpiCommunicator::AllReduce(void* data, size_t count, DType dtype, ReduceOp reduce,
                                  const CollectiveOptions& opts) {
  if (DTypeSize(dtype) == 0) return InvalidArgument("AllReduce: unknown dtype");
  if (count > 0 && data == nullptr) return InvalidArgument("AllReduce: data is null");
  RETURN_IF_ERROR(Usable("AllReduce", opts));
  if (count == 0) return OkStatus();
  const int n = size();
  if (n > 1) Throttle(2 * (n - 1), count * 4 / n);
  const auto deadline = Clock::now() + opts.timeout;
  // MPI does not report wire bytes. We count what a ring allreduce of the f32 buffer
  // moves, 2*(n-1)/n of it each way, so numbers compare with the Gloo backend.
  const int64_t moved = 2 * static_cast<int64_t>(n - 1) * static_cast<int64_t>(count * 4) / n;
  if (UseProgressThread()) {
    // f32 is reduced in the caller's buffer; 16-bit through an f32 copy the job owns.
    std::shared_ptr<std::vector<float>> scratch;
    float* target = static_cast<float*>(data);
    if (dtype != DType::kF32) {
      scratch = std::make_shared<std::vector<float>>(count);
      ToF32(data, dtype, scratch->data(), count);
      target = scratch->data();
    }
    if (n > 1) {
      MPI_Comm comm = state_->comm;
      RETURN_IF_ERROR(RunBlocking("AllReduce", opts, deadline, [=]() -> Status {
        for (size_t off = 0; off < count; off += kMaxPiece) {
          const int len = static_cast<int>(std::min(kMaxPiece, count - off));
          SHOAL_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, target + off, len, MPI_FLOAT, MPI_SUM, comm));
        }
        (void)scratch;  // held by the job until MPI is done with it
        return OkStatus();
      }));
    }
    if (reduce == ReduceOp::kAverage) {
      for (size_t i = 0; i < count; ++i) target[i] /= static_cast<float>(n);
    }
    if (dtype != DType::kF32) FromF32(target, dtype, data, count);
    counters_.sent += moved;
    counters_.received += moved;
    return OkStatus();
  }
  // MPI works on our f32 copy, never on the caller's buffer, so abandoning a request
  // cannot leave MPI writing into memory the caller has reused.
  auto scratch = std::make_shared<std::vector<float>>(count);
  ToF32(data, dtype, scratch->data(), count);
  if (n > 1) {
    for (size_t off = 0; off < count; off += kMaxPiece) {
      float* piece = scratch->data() + off;
      const int len = static_cast<int>(std::min(kMaxPiece, count - off));
      RETURN_IF_ERROR(Complete("AllReduce", opts, deadline, [&](void* req) -> Status {
        SHOAL_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, piece, len, MPI_FLOAT, MPI_SUM, state_->comm,
                                       static_cast<MPI_Request*>(req)));
        return OkStatus();
      }, scratch));
    }
  }
  if (reduce == ReduceOp::kAverage) {
    for (float& v : *scratch) v /= static_cast<float>(n);
  }
  FromF32(scratch->data(), dtype, data, count);
  counters_.sent += moved;
  counters_.received += moved;
  return OkStatus();
}

Status MpiCommunicator::AllGather(const void* send, void* recv, size_t bytes_per_rank,
                                  const CollectiveOptions& opts) {
  RETURN_IF_ERROR(CheckPieces("AllGather", send, recv, bytes_per_rank));
  RETURN_IF_ERROR(Usable("AllGather", opts));
  if (bytes_per_rank == 0) return OkStatus();
  const int n = size();
  Throttle(n - 1, bytes_per_rank);
  const auto deadline = Clock::now() + opts.timeout;
  if (UseProgressThread()) {
    // In place in the caller's buffer; memmove since `send` may be its own slot.
    std::memmove(static_cast<char*>(recv) + rank() * bytes_per_rank, send, bytes_per_rank);
    if (n > 1) {
      MPI_Comm comm = state_->comm;
      const int len = static_cast<int>(bytes_per_rank);
      RETURN_IF_ERROR(RunBlocking("AllGather", opts, deadline, [=]() -> Status {
        SHOAL_MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, len, MPI_BYTE, comm));
        return OkStatus();
      }));
    }
  } else {
    RETURN_IF_ERROR(AllGatherPolled(send, recv, bytes_per_rank, opts, deadline));
  }
  // Ring model (MPI does not report wire bytes): n-1 blocks each way.
  counters_.sent += static_cast<int64_t>((n - 1) * bytes_per_rank);
  counters_.received += static_cast<int64_t>((n - 1) * bytes_per_rank);
  return OkStatus();
}

Status MpiCommunicator::AllGatherPolled(const void* send, void* recv, size_t bytes_per_rank,
                                        const CollectiveOptions& opts,
                                        Clock::time_point deadline) {
  const int n = size();
  const size_t total = bytes_per_rank * n;
  auto scratch = std::make_shared<std::vector<char>>(total);
  std::memcpy(scratch->data() + rank() * bytes_per_rank, send, bytes_per_rank);
  if (n > 1) {
    const int len = static_cast<int>(bytes_per_rank);
    RETURN_IF_ERROR(Complete("AllGather", opts, deadline, [&](void* req) -> Status {
      SHOAL_MPI_CHECK(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, scratch->data(), len,
                                     MPI_BYTE, state_->comm, static_cast<MPI_Request*>(req)));
      return OkStatus();
    }, scratch));
  }
  std::memcpy(recv, scratch->data(), total);
  return OkStatus();
}

Status MpiCommunicator::AllToAll(const void* send, void* recv, size_t bytes_per_rank,
                                 const CollectiveOptions& opts) {
  RETURN_IF_ERROR(CheckPieces("AllToAll", send, recv, bytes_per_rank));
  RETURN_IF_ERROR(Usable("AllToAll", opts));
  if (bytes_per_rank == 0) return OkStatus();
  const int n = size();
  Throttle(n - 1, bytes_per_rank);
  const auto deadline = Clock::now() + opts.timeout;
  const int len = static_cast<int>(bytes_per_rank);
  if (n == 1) {
    std::memcpy(recv, send, bytes_per_rank);
  } else if (UseProgressThread()) {
    MPI_Comm comm = state_->comm;
    RETURN_IF_ERROR(RunBlocking("AllToAll", opts, deadline, [=]() -> Status {
      SHOAL_MPI_CHECK(MPI_Alltoall(send, len, MPI_BYTE, recv, len, MPI_BYTE, comm));
      return OkStatus();
    }));
  } else {
    // Scratch copies: an abandoned request must not write into the caller's buffer.
    const size_t total = bytes_per_rank * n;
    auto scratch = std::make_shared<std::vector<char>>(2 * total);
    std::memcpy(scratch->data(), send, total);
    RETURN_IF_ERROR(Complete("AllToAll", opts, deadline, [&](void* req) -> Status {
      SHOAL_MPI_CHECK(MPI_Ialltoall(scratch->data(), len, MPI_BYTE, scratch->data() + total, len,
                                    MPI_BYTE, state_->comm, static_cast<MPI_Request*>(req)));
      return OkStatus();
    }, scratch));
    std::memcpy(recv, scratch->data() + total, total);
  }
  // Pairwise model (MPI does not report wire bytes): one block to and from each peer.
  counters_.sent += static_cast<int64_t>((n - 1) * bytes_per_rank);
  counters_.received += static_cast<int64_t>((n - 1) * bytes_per_rank);
  return OkStatus();
}

Status MpiCommunicator::Broadcast(void* data, size_t bytes, int root,
                                  const CollectiveOptions& opts) {
  const int n = size();
  if (root < 0 || root >= n) {
    return InvalidArgument(fmt::format("Broadcast: root {} outside [0, {})", root, n));
  }
  if (bytes > 0 && data == nullptr) return InvalidArgument("Broadcast: data is null");
  RETURN_IF_ERROR(Usable("Broadcast", opts));
  if (bytes == 0 || n == 1) return OkStatus();
  if ((rank() - root + n) % n < n - 1) Throttle(1, bytes);
  const auto deadline = Clock::now() + opts.timeout;
  if (UseProgressThread()) {
    MPI_Comm comm = state_->comm;
    RETURN_IF_ERROR(RunBlocking("Broadcast", opts, deadline, [=]() -> Status {
      for (size_t off = 0; off < bytes; off += kMaxPiece) {
        const int len = static_cast<int>(std::min(kMaxPiece, bytes - off));
        SHOAL_MPI_CHECK(MPI_Bcast(static_cast<char*>(data) + off, len, MPI_BYTE, root, comm));
      }
      return OkStatus();
    }));
  } else {
    RETURN_IF_ERROR(BroadcastPolled(data, bytes, root, opts, deadline));
  }
  // Chain model (MPI does not report wire bytes): everyone but the root receives the
  // buffer once, everyone but the last in the chain root, root+1, ... sends it once.
  const int pos = (rank() - root + n) % n;
  if (pos > 0) counters_.received += static_cast<int64_t>(bytes);
  if (pos < n - 1) counters_.sent += static_cast<int64_t>(bytes);
  return OkStatus();
}

Status MpiCommunicator::BroadcastPolled(void* data, size_t bytes, int root,
                                        const CollectiveOptions& opts,
                                        Clock::time_point deadline) {
  auto scratch = std::make_shared<std::vector<char>>(bytes);
  if (rank() == root) std::memcpy(scratch->data(), data, bytes);
  for (size_t off = 0; off < bytes; off += kMaxPiece) {
    char* piece = scratch->data() + off;
    const int len = static_cast<int>(std::min(kMaxPiece, bytes - off));
    RETURN_IF_ERROR(Complete("Broadcast", opts, deadline, [&](void* req) -> Status {
      SHOAL_MPI_CHECK(MPI_Ibcast(piece, len, MPI_BYTE, root, state_->comm,
                                 static_cast<MPI_Request*>(req)));
      return OkStatus();
    }, scratch));
  }
  if (rank() != root) std::memcpy(data, scratch->data(), bytes);
  return OkStatus();
}

Status MpiCommunicator::Barrier(const CollectiveOptions& opts) {
  RETURN_IF_ERROR(Usable("Barrier", opts));
  if (size() == 1) return OkStatus();
  const auto deadline = Clock::now() + opts.timeout;
  if (UseProgressThread()) {
    MPI_Comm comm = state_->comm;
    return RunBlocking("Barrier", opts, deadline, [=]() -> Status {
      SHOAL_MPI_CHECK(MPI_Barrier(comm));
      return OkStatus();
    });
  }
  return Complete("Barrier", opts, deadline, [&](void* req) -> Status {
    SHOAL_MPI_CHECK(MPI_Ibarrier(state_->comm, static_cast<MPI_Request*>(req)));
    return OkStatus();
  }, nullptr);
}

void MpiCommunicator::Abort() {
  latch_.Abort();
  // Wake callers waiting on the progress thread (set once at construction).
  if (auto& progress = state_->progress) {
    std::lock_guard<std::mutex> lock(progress->mu);
    progress->done_cv.notify_all();
  }
}

Status MpiCommunicator::Usable(const char* name, const CollectiveOptions& opts) {
  // Checked before anything is issued: a request cannot be taken back.
  if (opts.timeout.count() <= 0) {
    return InvalidArgument(fmt::format("{}(tag={}): timeout must be positive", name, opts.tag));
  }
  return latch_.Check(name);
}

Status MpiCommunicator::MarkBroken(Status status) { return latch_.Break(std::move(status)); }

void MpiCommunicator::SetLinkEmulation(const LinkEmulation& emulation) {
  throttle_ = emulation.enabled() ? std::make_unique<TokenBucket>(emulation) : nullptr;
}

void MpiCommunicator::Throttle(int64_t messages, size_t bytes_each) {
  if (throttle_ == nullptr) return;
  for (int64_t i = 0; i < messages; ++i) throttle_->BeforeSend(bytes_each);
}

}  // namespace shoal
