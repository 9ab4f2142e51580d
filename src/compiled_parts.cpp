// kvq::kernels' out-of-line parts other than the kernels (core/compiled.hpp):
// the codec table (every codec's constructor, codebooks, rotations) and
// CacheSpec's parsing, defined once for the program.
#define KVQ_DEFINE_COMPILED_PARTS
#include <kvq/core/compiled.hpp>
#include <kvq/core/compiled_parts.hpp>
