// Attention-aware precision: the heavy hitters of one KV layer.
//
// Age tiers demote every token with its age, yet a few old tokens draw
// attention for the whole context (H2O's "heavy hitters": attention sinks,
// a name the text keeps returning to). With `heavy=N` in the spec, each KV
// head keeps up to N older tokens exact, chosen at run time by the attention
// they draw, beside their compressed copies: the fused pass masks the
// compressed copy (its score becomes -inf) and adds the exact one, so a token
// is read once, in the better form. Tokens of the first `sinks` positions are
// exact anyway; with sinks=0 the first tokens are found as heavy hitters like
// any other, which is the automatic sink detection.
//
// How a token is judged. Each attend gives every token, per KV head, the
// softmax weight the query heads of one position (the GQA group) put on it,
// summed, when that position sees it from at least `min_age` positions away
// (local attention, which every recent token gets, does not count); a token's
// *long-range mass* is the largest such weight it has drawn. A token is judged
// when it first leaves the exact window of the K or the V stream: its exact K
// and V are copied into a pending slot (the other stream still has it exact in
// its window), and the next attend, which sees it, decides it: admitted while
// the set has room, else in place of the member with the least mass when it
// has more. Members keep their largest mass (they can still draw more).
// H2O sums the weights instead; on the retrieval probe (docs/QUALITY.md) the
// sum keeps old tokens that many distant queries each weighed a little,
// while the peak keeps the ones a query actually looked up. Pending tokens are
// at most N per head between appends: when an append leaves more tokens
// unjudged (a long prefill append with no attend between), the oldest are
// decided with what they have (no mass: not admitted). So every token is
// judged after at least one attend when prefill appends no more than
// window + N tokens between attends.
//
// Storage per head is fixed (N member slots and N + G pending slots of the
// exact codec for K and for V, G the largest policy tile), taken at the first
// append and committed in the page pool like the undo log, so admissions never
// allocate or fail; bytes_used counts the slots in use, capacity_bytes all.
#pragma once

#include <kvq/cache/stream.hpp>
#include <kvq/codec/registry.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <span>
#include <vector>

namespace kvq::detail {

struct SnapshotIO;

// Attention from fewer positions away is local attention, which every token
// of the window gets, so it does not count: 32 positions, or half the window
// when that is smaller.
inline std::size_t heavy_min_age(std::size_t window) noexcept { return std::min<std::size_t>(32, window / 2); }

class HeavyHitters {
 public:
  // No heavy hitters (heavy=0): every member is a no-op.
  HeavyHitters(PagePool& pool) : held_(pool) {}
  // `max_move`: the most tokens one stream moves out of its window at once
  // (its policy tile), so pending slots never overrun.
  HeavyHitters(std::size_t budget, std::size_t n_heads, AnyCodec exact, std::size_t min_age, std::size_t max_move,
               PagePool& pool)
      : budget_(budget), min_age_(min_age), n_heads_(n_heads), exact_(std::move(exact)), held_(pool) {
    if (budget_ == 0) return;
    bt_ = exact_->bytes_per_tile();
    cap_ = budget_ + max_move;
  }

  // The storage is taken at the first append (an empty cache holds nothing):
  // bytes that append's allowance must hold for it.
  std::size_t storage_need() const noexcept { return enabled() && !has_storage() ? storage_bytes() : 0; }
  void allocate(Allowance& a) {
    if (storage_need() == 0) return;
    held_.add(storage_bytes(), a);
    heads_.resize(n_heads_);
    for (Head& h : heads_) {
      h.k.resize(budget_ * bt_);
      h.v.resize(budget_ * bt_);
      h.pk.resize(cap_ * bt_);
      h.pv.resize(cap_ * bt_);
      h.pos.reserve(budget_);
      h.mass.reserve(budget_);
      h.sorted.reserve(budget_);
    }
  }
  // Bytes of the storage taken.
  std::size_t capacity() const noexcept { return has_storage() ? storage_bytes() : 0; }

  // The spec asks for heavy hitters; their storage is taken at the first
  // append (has_storage), and every member below needs it.
  bool enabled() const noexcept { return budget_ > 0; }
  bool has_storage() const noexcept { return !heads_.empty(); }
  std::size_t budget() const noexcept { return budget_; }
  std::size_t min_age() const noexcept { return min_age_; }
  const AnyCodec& codec() const noexcept { return *exact_; }
  std::size_t tile_bytes() const noexcept { return bt_; }
  // Positions [base, pend) are pending, [pend, length) still in both windows.
  std::size_t base() const noexcept { return base_; }
  std::size_t pend() const noexcept { return pend_; }

  // The members of one head, in slot order: positions, exact K and V tiles.
  std::size_t members(std::size_t h) const noexcept { return has_storage() ? heads_[h].pos.size() : 0; }
  const std::uint32_t* positions(std::size_t h) const noexcept { return heads_[h].pos.data(); }
  const std::byte* keys(std::size_t h) const noexcept { return heads_[h].k.data(); }
  const std::byte* values(std::size_t h) const noexcept { return heads_[h].v.data(); }
  const float* mass(std::size_t h) const noexcept { return heads_[h].mass.data(); }
  // Member positions ascending: what the pass masks in the compressed streams.
  std::span<const std::uint32_t> hidden(std::size_t h) const noexcept {
    if (!has_storage()) return {};
    return {heads_[h].sorted.data(), heads_[h].sorted.size()};
  }
  bool is_member(std::size_t h, std::size_t p) const noexcept {
    const auto& s = heads_[h].sorted;
    return std::binary_search(s.begin(), s.end(), static_cast<std::uint32_t>(p));
  }
  // Exact K / V tile of pending position p (base <= p < pend).
  const std::byte* pending_key(std::size_t h, std::size_t p) const noexcept { return heads_[h].pk.data() + slot(p) * bt_; }
  const std::byte* pending_value(std::size_t h, std::size_t p) const noexcept {
    return heads_[h].pv.data() + slot(p) * bt_;
  }
  // How many positions from p on have adjacent slots (the ring wraps once).
  std::size_t pending_run(std::size_t p) const noexcept { return cap_ - slot(p); }
  // Long-range mass of undecided position p (base <= p < length), per head.
  float& candidate_mass(std::size_t h, std::size_t p) noexcept { return heads_[h].cand[p - base_]; }
  float& member_mass(std::size_t h, std::size_t slot) noexcept { return heads_[h].mass[slot]; }

  // A new token at position length - 1.
  void appended() {
    if (!has_storage()) return;
    for (Head& h : heads_) h.cand.push_back(0.0f);
  }

  // Stream `self` moved positions [first, first + n) of head `head` out of its
  // window (x: their exact values); `other` is the other stream, which still
  // holds them in its window unless it moved them first. `is_key`: self is K.
  void left_window(const Stream& self, const Stream& other, bool is_key, std::size_t first, std::size_t n,
                   std::size_t head, const float* x) {
    if (!has_storage() || first + n <= pend_) return;
    const std::size_t d = self.head_dim, w = other.layout.window_segment();
    const std::size_t other_start = other.length() - other.counts[w];
    if (first > pend_ && head == 0) {  // the sinks before `first` never pass the window: exact, not judged
      decide_pending();
      for (Head& h : heads_) h.cand.erase(h.cand.begin(), h.cand.begin() + std::ptrdiff_t(first - base_));
      base_ = pend_ = first;
    }
    require(first <= pend_ && std::max(first, pend_) >= other_start, Errc::invalid_argument,
            "heavy hitters: a token left one window after the other's (internal)");
    // Room in the ring for these positions: decide the oldest pending ones
    // (all heads have written those).
    if (head == 0)
      while (first + n - base_ > cap_) decide_oldest();
    std::vector<float>& tmp = scratch_;
    tmp.resize(d);
    for (std::size_t p = std::max(first, pend_); p < first + n; ++p) {
      Head& h = heads_[head];
      std::byte* own = (is_key ? h.pk : h.pv).data() + slot(p) * bt_;
      std::byte* theirs = (is_key ? h.pv : h.pk).data() + slot(p) * bt_;
      exact_->encode_tile(x + (p - first) * d, own);
      other.codecs[w].decode_tile(other.data[w][head].tile(p - other_start), tmp.data());
      exact_->encode_tile(tmp.data(), theirs);
    }
    // Heads move in lockstep: the last head's call advances the frontier.
    if (head + 1 == n_heads_) {
      pend_ = first + n;
      while (pend_ - base_ > budget_) decide_oldest();
    }
  }

  // Decides every pending position (after an attend has added their mass).
  void decide_pending() {
    while (base_ < pend_) decide_oldest();
  }

  // Keeps positions < p.
  void truncate(std::size_t p) {
    if (!has_storage()) return;
    for (Head& h : heads_) {
      for (std::size_t s = 0; s < h.pos.size();)
        if (h.pos[s] >= p) remove_slot(h, s);
        else ++s;
      const std::size_t keep = p > base_ ? p - base_ : 0;
      if (h.cand.size() > keep) h.cand.resize(keep);
    }
    if (p < base_) {
      for (Head& h : heads_) h.cand.clear();
      base_ = p;
    }
    pend_ = std::min(pend_, p);
  }

  void clear() {
    if (!has_storage()) return;
    for (Head& h : heads_) {
      h.pos.clear();
      h.mass.clear();
      h.sorted.clear();
      h.cand.clear();
    }
    base_ = pend_ = 0;
  }

  // Same budget and shape; `a` holds o.capacity() for the copy's storage.
  void copy_from(const HeavyHitters& o, Allowance& a) {
    if (!o.has_storage()) return;
    allocate(a);
    heads_ = o.heads_;
    base_ = o.base_;
    pend_ = o.pend_;
  }

  // Slots in use (members and pending, K and V), over every head.
  std::size_t bytes_used() const noexcept {
    if (!has_storage()) return 0;
    std::size_t slots = 0;
    for (const Head& h : heads_) slots += h.pos.size() + (pend_ - base_);
    return 2 * slots * bt_;
  }
  std::size_t storage_bytes() const noexcept { return n_heads_ * 2 * (budget_ + cap_) * bt_; }

 private:
  friend struct SnapshotIO;
  struct Head {
    std::vector<std::uint32_t> pos;     // member positions, slot order
    std::vector<float> mass;            // member long-range mass
    std::vector<std::uint32_t> sorted;  // member positions ascending
    std::vector<std::byte> k, v;        // member tiles [budget]
    std::vector<std::byte> pk, pv;      // pending tiles, a ring indexed by position
    std::deque<float> cand;             // mass of positions [base, length)
  };

  std::size_t slot(std::size_t p) const noexcept { return p % cap_; }

  void remove_slot(Head& h, std::size_t s) {
    const std::uint32_t p = h.pos[s];
    h.sorted.erase(std::lower_bound(h.sorted.begin(), h.sorted.end(), p));
    const std::size_t last = h.pos.size() - 1;
    if (s != last) {
      h.pos[s] = h.pos[last];
      h.mass[s] = h.mass[last];
      std::memcpy(h.k.data() + s * bt_, h.k.data() + last * bt_, bt_);
      std::memcpy(h.v.data() + s * bt_, h.v.data() + last * bt_, bt_);
    }
    h.pos.pop_back();
    h.mass.pop_back();
  }

  // Admits or drops position base_ in every head.
  void decide_oldest() {
    const std::size_t p = base_;
    for (Head& h : heads_) {
      const float m = h.cand.empty() ? 0.0f : h.cand.front();
      if (!h.cand.empty()) h.cand.pop_front();
      if (!(m > 0.0f)) continue;
      std::size_t s = h.pos.size();
      if (s == budget_) {
        s = static_cast<std::size_t>(std::min_element(h.mass.begin(), h.mass.end()) - h.mass.begin());
        if (!(m > h.mass[s])) continue;
        h.sorted.erase(std::lower_bound(h.sorted.begin(), h.sorted.end(), h.pos[s]));
      } else {
        h.pos.push_back(0);
        h.mass.push_back(0.0f);
      }
      h.pos[s] = static_cast<std::uint32_t>(p);
      h.mass[s] = m;
      h.sorted.insert(std::upper_bound(h.sorted.begin(), h.sorted.end(), h.pos[s]), h.pos[s]);
      std::memcpy(h.k.data() + s * bt_, h.pk.data() + slot(p) * bt_, bt_);
      std::memcpy(h.v.data() + s * bt_, h.pv.data() + slot(p) * bt_, bt_);
    }
    ++base_;
  }

  std::size_t budget_ = 0, min_age_ = 0, n_heads_ = 0, bt_ = 0, cap_ = 0;
  std::optional<AnyCodec> exact_;
  std::vector<Head> heads_;
  std::size_t base_ = 0, pend_ = 0;
  std::vector<float> scratch_;
  LogBytes held_;  // the storage, committed in the pool
};

}  // namespace kvq::detail
