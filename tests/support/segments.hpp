// A cache's stored stretches grouped by segment: Cache::segments() gives one
// view per page; tests of the segment rules want one per segment.
#pragma once

#include <kvq/cache/cache.hpp>

#include <cstddef>
#include <vector>

namespace kvq::test {

struct SegmentCopy {
  const AnyCodec* codec = nullptr;
  std::size_t first_position = 0;
  std::size_t n_tokens = 0;
  std::vector<std::byte> bytes;  // the segment's tiles, in order
  std::size_t pages = 0;         // views (pages) it came from
};

inline std::vector<SegmentCopy> segments_of(const Cache& c, std::size_t layer, StreamKind kind, std::size_t head) {
  std::vector<SegmentCopy> out;
  for (const SegmentView& v : c.segments(layer, kind, head)) {
    if (out.size() <= v.segment) out.push_back({v.codec, v.first_position, 0, {}, 0});
    SegmentCopy& s = out.back();
    s.n_tokens += v.n_tokens;
    s.bytes.insert(s.bytes.end(), v.bytes.begin(), v.bytes.end());
    ++s.pages;
  }
  return out;
}

}  // namespace kvq::test
