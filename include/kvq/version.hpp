// kvq's version. Snapshot files record it (see the cache's snapshot format).
#pragma once

#define KVQ_VERSION_MAJOR 0
#define KVQ_VERSION_MINOR 1
#define KVQ_VERSION_PATCH 0
#define KVQ_VERSION_STRING "0.1.0"

namespace kvq {
inline constexpr int version_major = KVQ_VERSION_MAJOR;
inline constexpr int version_minor = KVQ_VERSION_MINOR;
inline constexpr int version_patch = KVQ_VERSION_PATCH;
}  // namespace kvq
