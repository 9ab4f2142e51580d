// Every per-target kernel header, compiled once per SIMD target by
// dispatch.hpp through hwy/foreach_target.h. A new codec family adds its
// *-inl.h here and its wrappers in dispatch.hpp; nothing else changes.
// (No include guard: foreach_target.h re-includes this file per target and
// each *-inl.h carries Highway's toggle guard.)
#include <kvq/kernels/target-inl.h>
#include <kvq/kernels/rows-inl.h>
#include <kvq/kernels/int8_dot-inl.h>
#include <kvq/kernels/int8_query-inl.h>
#include <kvq/kernels/uniform-inl.h>
#include <kvq/kernels/value_products-inl.h>
#include <kvq/kernels/turbo-inl.h>
#include <kvq/kernels/per_channel-inl.h>
#include <kvq/kernels/exact-inl.h>
#include <kvq/kernels/softmax-inl.h>
