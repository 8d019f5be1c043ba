// The Gloo backend's allreduce: a ring reduce-scatter then allgather, pipelined in
// segments with a bounded window of messages in flight (see AllReduceRing).
#include <algorithm>
#include <utility>
#include <vector>

#include "collectives/gloo/gloo_communicator.h"
#include "collectives/gloo/gloo_op.h"

namespace shoal {

using gloo_detail::Accumulate;
using gloo_detail::Chunks;
using gloo_detail::Mod;
using gloo_detail::SplitEvenly;

Status GlooCommunicator::AllReduceRing(Op& op, void* data, size_t count, DType dtype,
                                       ReduceOp reduce) {
  const int n = size_, r = rank_;
  const int next = Mod(r + 1, n), prev = Mod(r - 1, n);
  const size_t es = DTypeSize(dtype);
  const Chunks chunks = SplitEvenly(count, n);
  auto* wire = static_cast<char*>(data);

  // f32 accumulates in place; 16-bit dtypes accumulate in an f32 copy while the
  // caller's buffer doubles as the 16-bit staging area for what goes on the wire.
  std::vector<float> acc_copy;
  float* acc = static_cast<float*>(data);
  if (dtype != DType::kF32) {
    acc_copy.resize(count);
    ToF32(data, dtype, acc_copy.data(), count);
    acc = acc_copy.data();
  }

  // Pipelining: every chunk travels in segments, and a segment is forwarded as soon
  // as it has been accumulated, so the wire never waits for a whole chunk and the
  // sums of segment k overlap the transfer of k+1. Both ends cut a chunk the same
  // way, and messages on one pair and slot match in posting order.
  //
  // The incoming stream, in order: reduce-scatter steps s = 0..n-2 bring chunk
  // r-s-1 (added to ours and forwarded; at s = n-2 it is our own finished chunk
  // r+1, which starts the allgather), then allgather steps s = 0..n-2 bring the
  // finished chunk r-s (stored, and forwarded unless s = n-2).
  struct Piece {
    size_t offset, length;  // elements
    bool reduce, forward, finish;
  };
  const size_t seg = std::max<size_t>(1, ring_segment_bytes_ / es);
  std::vector<Piece> pieces;
  auto add_chunk = [&](int c, bool reduce_it, bool forward, bool finish) {
    for (size_t at = 0; at < chunks.length[c]; at += seg) {
      pieces.push_back({chunks.offset[c] + at, std::min(seg, chunks.length[c] - at), reduce_it,
                        forward, finish});
    }
  };
  for (int s = 0; s < n - 1; ++s) add_chunk(Mod(r - s - 1, n), true, true, s == n - 2);
  for (int s = 0; s < n - 1; ++s) add_chunk(Mod(r - s, n), false, s < n - 2, false);

  // The outgoing stream: our own input chunk r first (reduce-scatter step 0), then
  // every piece marked `forward`, in the order it is processed.
  std::vector<std::pair<size_t, size_t>> out;  // (offset, length) in elements
  for (size_t at = 0; at < chunks.length[r]; at += seg) {
    out.emplace_back(chunks.offset[r] + at, std::min(seg, chunks.length[r] - at));
  }
  size_t n_out = out.size();
  for (const Piece& p : pieces) n_out += p.forward ? 1 : 0;

  // Lockstep with W (ring_window_) messages in flight each way, as gloo's own ring
  // (W = 2): iteration i posts receive i and send i, then waits for receive i-W+1
  // and send i-W. A bounded
  // window matters: posting a whole chunk of sends at once stalled the TCP pairs
  // (measured up to 2.5x slower), and it cannot deadlock because every wait is for
  // a message its peer posted an iteration earlier.
  const size_t kWindow = ring_window_;
  std::vector<char> inbox(kWindow * std::min(seg, chunks.max_length) * es);
  const size_t slot_bytes = inbox.size() / kWindow;
  Buffer sendbuf(this, data, count * es);
  Buffer gatherbuf(this, data, count * es);
  Buffer inboxbuf(this, inbox.data(), inbox.size());
  size_t posted_sends = 0, waited_sends = 0;
  // Send j is posted at iteration >= j once it exists (a forward exists only after
  // its piece was processed; with an empty own chunk that is one iteration late).
  auto post_sends = [&](size_t i) {
    while (posted_sends <= i && posted_sends < out.size()) {
      op.PostSend(sendbuf, next, out[posted_sends].first * es, out[posted_sends].second * es);
      ++posted_sends;
    }
  };
  const size_t n_in = pieces.size();
  for (size_t i = 0; i < std::max(n_in, n_out) + kWindow; ++i) {
    if (i < n_in) {
      const Piece& p = pieces[i];
      if (p.reduce) {
        op.PostRecv(inboxbuf, prev, (i % kWindow) * slot_bytes, p.length * es);
      } else {
        op.PostRecv(gatherbuf, prev, p.offset * es, p.length * es);
      }
    }
    post_sends(i);
    if (i + 1 >= kWindow && i + 1 - kWindow < n_in) {
      const size_t k = i + 1 - kWindow;
      const Piece& p = pieces[k];
      if (p.reduce) {
        RETURN_IF_ERROR(op.WaitRecv(inboxbuf, prev, p.length * es));
        Accumulate(acc + p.offset, inbox.data() + (k % kWindow) * slot_bytes, dtype, p.length);
        if (p.finish && reduce == ReduceOp::kAverage) {
          // The owner finishes its chunk once (average included) so that every rank
          // ends with the same bits: the allgather copies, it does not recompute.
          for (size_t e = 0; e < p.length; ++e) acc[p.offset + e] /= static_cast<float>(n);
        }
        if (dtype != DType::kF32) FromF32(acc + p.offset, dtype, wire + p.offset * es, p.length);
      } else {
        RETURN_IF_ERROR(op.WaitRecv(gatherbuf, prev, p.length * es));
      }
      if (p.forward) out.emplace_back(p.offset, p.length);
      post_sends(i);
    }
    while (waited_sends + kWindow <= i && waited_sends < posted_sends) {
      RETURN_IF_ERROR(op.WaitSend(sendbuf, next, out[waited_sends].second * es));
      ++waited_sends;
    }
  }
  post_sends(out.size());
  while (waited_sends < posted_sends) {
    RETURN_IF_ERROR(op.WaitSend(sendbuf, next, out[waited_sends].second * es));
    ++waited_sends;
  }
  return OkStatus();
}

Status GlooCommunicator::AllReducePair(Op& op, void* data, size_t count, DType dtype, ReduceOp reduce) {
  const int peer = 1 - rank_;
  const size_t bytes = count * DTypeSize(dtype);
  std::vector<char> theirs(bytes);
  Buffer sendbuf(this, data, bytes);
  Buffer recvbuf(this, theirs.data(), bytes);
  RETURN_IF_ERROR(op.Exchange(sendbuf, peer, 0, bytes, recvbuf, peer, 0, bytes));
  // Both ranks add the same two numbers, and a + b == b + a exactly in IEEE arithmetic,
  // so the results agree bit for bit. 16-bit dtypes are summed in f32 and rounded once.
  if (dtype == DType::kF32) {
    float* mine = static_cast<float*>(data);
    Accumulate(mine, theirs.data(), dtype, count);
    if (reduce == ReduceOp::kAverage) {
      for (size_t i = 0; i < count; ++i) mine[i] /= 2.0f;
    }
    return OkStatus();
  }
  std::vector<float> acc(count);
  ToF32(data, dtype, acc.data(), count);
  Accumulate(acc.data(), theirs.data(), dtype, count);
  if (reduce == ReduceOp::kAverage) {
    for (float& v : acc) v /= 2.0f;
  }
  FromF32(acc.data(), dtype, data, count);
  return OkStatus();
}

}  // namespace shoal
